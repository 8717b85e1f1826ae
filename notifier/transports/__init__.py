"""The subscriber side of each transport: WebSocket, Server-Sent Events, long-poll."""
