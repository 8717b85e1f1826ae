"""The subscriber side of each transport: WebSocket, long-poll."""
