"""The test harness, by concern:

- ``waiting``: waits that are always bounded (sleep, bounded, until, eventually, result_of);
- ``daemon``: a daemon in this process on free loopback ports, its configuration;
- ``http``: the HTTP API as a publisher and an operator call it, and the credentials;
- ``websocket``, ``sse``: clients of those transports over real sockets;
- ``memory``: the api listener's app, the public listener and a node in memory;
- ``tls``: a self-signed certificate for listeners on loopback.

All of them are re-exported here: ``from tests.support import X`` works as
it did when the harness was one module. What the tests of the PHP client
share (``php``) is imported from its module."""

from __future__ import annotations

from tests.support.daemon import (
    ADMIN_TOKEN,
    Daemon,
    admin_stats,
    config_text,
    free_port,
    healthy,
    rss,
    running,
    server_side,
    small_send_buffer,
    start_daemon,
)
from tests.support.http import (
    SCHEME,
    TEXT,
    basic,
    call,
    expect_json_error,
    make_center,
    publish,
    published,
    setup_site,
    sign,
    signature_header,
    signed_headers,
    subscriber_count,
    subscriber_token,
)
from tests.support.memory import (
    PUBLIC,
    START,
    Answer,
    Api,
    Listener,
    Node,
    Recorder,
    Told,
    fired,
)
from tests.support.sse import (
    EventSource,
    event_source,
)
from tests.support.tls import self_signed
from tests.support.waiting import (
    WAIT,
    bounded,
    eventually,
    result_of,
    sleep,
    until,
)
from tests.support.websocket import (
    WebSocket,
    _Client,
    handshake_headers,
    nothing_more,
    opened,
    websocket,
)

__all__ = [
    "PUBLIC",
    "Listener",
    "fired",
    "self_signed",
    "ADMIN_TOKEN",
    "Answer",
    "Api",
    "Daemon",
    "EventSource",
    "Node",
    "Recorder",
    "Told",
    "SCHEME",
    "START",
    "TEXT",
    "WAIT",
    "WebSocket",
    "_Client",
    "admin_stats",
    "basic",
    "bounded",
    "call",
    "config_text",
    "event_source",
    "eventually",
    "expect_json_error",
    "free_port",
    "handshake_headers",
    "healthy",
    "make_center",
    "nothing_more",
    "opened",
    "publish",
    "published",
    "result_of",
    "rss",
    "running",
    "server_side",
    "setup_site",
    "sign",
    "signature_header",
    "signed_headers",
    "sleep",
    "small_send_buffer",
    "start_daemon",
    "subscriber_count",
    "subscriber_token",
    "until",
    "websocket",
]
