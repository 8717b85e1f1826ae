"""Each transport whole (WebSocket, Server-Sent Events, long-poll): how a
subscription the public listener admitted is answered on it, its frames,
its headers, its cursors; and what the streaming ones share."""
