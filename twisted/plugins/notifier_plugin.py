from twisted.application.service import ServiceMaker

notifier = ServiceMaker(
    "notifier",
    "notifier.tap",
    "Real-time notification server: WebSocket, SSE and long-poll for PHP sites.",
    "notifier",
)
