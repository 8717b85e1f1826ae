"""What the Pusher tests share: an app of a daemon, and a WebSocket that
speaks Pusher's frames by hand, for what no stock client sends (malformed
frames, floods, forged signatures)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import attrs
import pusher
from twisted.internet import threads

from tests.support import Daemon
from tests.support.websocket import WebSocket, websocket


@attrs.frozen
class App:
    """A publisher as a Pusher app."""

    name: str
    app_id: str
    key: str
    secret: str


async def pusher_app(daemon: Daemon, name: str = "site", **pusher: Any) -> App:
    status, body = await daemon.admin("POST", "/admin/v1/publishers", {"name": name})
    assert status == 201, body
    if pusher:
        status, changed = await daemon.admin("PATCH", f"/admin/v1/publishers/{name}", {"pusher": pusher})
        assert status == 200, changed
    publisher = await daemon.service.publishers.publisher(name)
    assert publisher is not None
    return App(name, publisher.app_id, publisher.key, body["secret"])


def auth(app: App, text: str) -> str:
    """``key:signature`` of *text*, as a site's auth endpoint signs it."""
    return f"{app.key}:" + hmac.new(app.secret.encode(), text.encode(), hashlib.sha256).hexdigest()


class PusherSocket:
    """A WebSocket to ``/app/{key}``, read and written as Pusher frames."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.socket_id = ""

    @classmethod
    async def open(cls, daemon: Daemon, key: str, query: str = "protocol=7&client=js&version=8.4.0",
                   headers: dict[str, str] | None = None) -> PusherSocket:
        ws = await websocket(f"{daemon.ws}/app/{key}?{query}", daemon.public_port, headers)
        return cls(ws)

    async def established(self) -> dict[str, Any]:
        frame = await self.next()
        assert frame["event"] == "pusher:connection_established", frame
        data = json.loads(frame["data"])
        self.socket_id = data["socket_id"]
        return data

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await self.ws.next(timeout))
        return frame

    async def next_of(self, event: str, timeout: float = 5) -> dict[str, Any]:
        """The next frame of *event*, skipping others."""
        while True:
            frame = await self.next(timeout)
            if frame["event"] == event:
                return frame

    def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        body: dict[str, Any] = {"event": event}
        if data is not None:
            body["data"] = data
        if channel is not None:
            body["channel"] = channel
        self.send_text(json.dumps(body))

    def send_text(self, text: str) -> None:
        self.ws.protocol.sendMessage(text.encode())

    async def subscribe(self, channel: str, app: App | None = None, channel_data: str | None = None) -> dict[str, Any]:
        """Subscribe (signed for *app* when given); the answer's frame."""
        data: dict[str, Any] = {"channel": channel}
        if app is not None:
            text = f"{self.socket_id}:{channel}" + (f":{channel_data}" if channel_data is not None else "")
            data["auth"] = auth(app, text)
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send("pusher:subscribe", data)
        return await self.next()

    def close(self) -> None:
        self.ws.close()


def site_library(daemon: Daemon, app: App, **options: Any) -> pusher.Pusher:
    """The official ``pusher`` library, as *app*'s site, calling *daemon*'s api listener."""
    return pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret, host="127.0.0.1",
                         port=int(daemon.api.rsplit(":", 1)[1]), ssl=False, timeout=10, **options)


async def on_thread(client: pusher.Pusher, method: str, *args: Any, **kwargs: Any) -> Any:
    """A call of the (synchronous) library, on a thread: the daemon runs on the reactor."""
    return await threads.deferToThread(getattr(client, method), *args, **kwargs)


async def connected(daemon: Daemon, app: App) -> PusherSocket:
    """A Pusher connection to *daemon*, established."""
    sock = await PusherSocket.open(daemon, app.key)
    await sock.established()
    return sock


async def subscribed(sock: PusherSocket, client: pusher.Pusher, channel: str,
                     user: dict[str, Any] | None = None) -> dict[str, Any]:
    """Subscribe with what the library's ``authenticate`` gives a page; the
    ``subscription_succeeded`` frame."""
    data: dict[str, Any] = {"channel": channel}
    if channel.startswith(("private-", "presence-")):
        data.update(client.authenticate(channel, sock.socket_id, user))
    sock.send("pusher:subscribe", data)
    return await sock.next_of("pusher_internal:subscription_succeeded")
