"""The operator console's files (docs/console.rst), served on the
api listener at ``/console/``: a page, its script and style, and the
charting library they use, all in the package (``notifier/static/console``),
read once when the daemon starts. Every answer forbids what the page never
does: another origin's scripts, styles or connections, inline scripts and
styles, being framed.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

from notifier.domain.errors import MethodNotAllowed, NotFound
from notifier.http.answers import error_answer
from notifier.http.request import Request

#: Headers of every answer under /console/ (X-Content-Type-Options is every
#: answer's: notifier.http.request.NOSNIFF).
HEADERS = {
    b"content-security-policy": (b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                 b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                                 b"base-uri 'none'; form-action 'none'"),
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}

TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "png": b"image/png",
    "svg": b"image/svg+xml",
    "ico": b"image/x-icon",
    "json": b"application/json",
}


def _read(folder: Traversable, prefix: str = "") -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.is_dir():
            found.update(_read(entry, f"{prefix}{entry.name}/"))
        elif entry.name.rsplit(".", 1)[-1] in TYPES:
            found[prefix + entry.name] = entry.read_bytes()
    return found


class Console:
    def __init__(self) -> None:
        folder = files("notifier").joinpath("static/console")
        self.files = _read(folder) if folder.is_dir() else {}

    def render(self, request: Request, path: list[bytes]) -> bytes:
        """Answer *request* for ``/console/`` followed by *path*."""
        for header, value in HEADERS.items():
            request.setHeader(header, value)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            method = request.method.decode("latin-1")
            return error_answer(request, MethodNotAllowed(f"{method} is not allowed here"))
        if not path:  # /console: the page is at /console/
            request.setResponseCode(301)
            request.setHeader(b"location", b"/console/")
            return b""
        try:
            name = b"/".join(path).decode("utf-8") or "index.html"
        except UnicodeDecodeError:
            name = ""
        body = self.files.get(name)
        if body is None:
            return error_answer(request, NotFound("no such file of the console", code="no_such_path"))
        request.setHeader(b"content-type", TYPES[name.rsplit(".", 1)[-1]])
        return body
