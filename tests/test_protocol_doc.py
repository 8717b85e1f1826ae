"""docs/protocol.rst against the real daemon: the wire reference cannot rot.

Every *example exchange* of the reference (an ``.. example-exchange: <label>``
comment followed by two ``.. code-block:: http`` blocks, the request and
its answer) is replayed, in the order of the page, against one freshly
started ``twistd -n notifier``, and the answer must be the documented one:
its status, every header shown, and its body (JSON of the same shape, with
the same codes and values, an event stream of the same events, text that
is the same text). So is every *example WebSocket* (an ``..
example-websocket: <label>`` comment followed by a ``.. code-block::
javascript`` whose first line is ``// ws://host/path?query`` and whose
other lines are the frames the daemon sends first, one JSON value each).
Every *example webhook* (an ``.. example-webhook: <label>`` comment followed
by one ``.. code-block:: http``, a request the daemon sends) must be signed
as documented: its ``Notifier-Signature`` is recomputed from the body, the
timestamp and the examples' secret.

What differs from run to run is mapped rather than ignored: a documented
publisher secret or admin token is replaced by the real one in requests,
signatures and subscriber tokens are made again with it, and each epoch
the page shows is bound to the daemon's own the first time an answer shows
it, then must stay the same; sequence numbers must be exactly the
documented ones. Times, the node id and counters only need the right type.

Besides, every error code the package can answer and every configuration
key (with its default) must be in the reference.
"""

from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
import pytest_twisted
from attrs import fields

import notifier
from notifier.config import Config
from tests.process import Process, write_config
from tests.raw import connect
from tests.support import ADMIN_TOKEN, bounded, call, websocket

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "protocol.rst"
PACKAGE = Path(notifier.__file__).resolve().parent

#: What the reference's examples were written with; the test maps them to the real ones.
DOC_PUBLISHER = "demo"
DOC_SECRET = "XvJ6WyTCef9pBlqK-hzzxQHdmlx2Q9mppccXUTd8eIM"
DOC_ADMIN_TOKEN = "0p3r4t0r-t0k3n"
#: The origin the daemon under test allows (the reference's examples use it).
ALLOWED_ORIGIN = "https://www.example.org"
#: The ``Host`` of the examples addressed to the api listener.
API_HOST = "127.0.0.1:8081"

MARKER = re.compile(r"^\.\. example-(?P<kind>exchange|websocket): (?P<label>.+)$")
WEBHOOK_MARKER = re.compile(r"^\.\. example-webhook: (?P<label>.+)$")
HTTP_BLOCK = ".. code-block:: http"
FRAMES_BLOCK = ".. code-block:: javascript"
#: A position, as notifier.domain.hub.CURSOR has it.
POSITION = re.compile(r"([A-Za-z0-9._~-]{1,64})-([0-9]{1,18})\Z")
#: Response headers that say nothing about the protocol.
TRANSIENT_HEADERS = {"date", "server", "content-length", "transfer-encoding", "connection"}
JSONP = re.compile(r"/\*\*/([A-Za-z_$][\w$.]*)\((.*)\);\Z", re.S)
#: How long one exchange may take, in seconds.
EXCHANGE_SECONDS = 10.0


# the reference, parsed


@attrs.frozen
class Message:
    """An HTTP message as the reference writes it: first line, headers, body."""

    first: str
    headers: tuple[tuple[str, str], ...]
    body: str

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def status(self) -> int:
        return int(self.first.split()[1])


@attrs.frozen
class Exchange:
    label: str
    line: int
    request: Message
    response: Message


def _block(lines: list[str], start: int) -> tuple[str, int]:
    """The content of the directive at *start* (its indented lines, dedented), and where it ends."""
    content: list[str] = []
    index = start + 1
    while index < len(lines) and (not lines[index].strip() or lines[index].startswith("   ")):
        content.append(lines[index][3:])
        index += 1
    return "\n".join(content).strip("\n"), index


def _message(text: str) -> Message:
    head, _, body = text.partition("\n\n")
    first, *header_lines = head.split("\n")
    headers = tuple((name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in header_lines))
    return Message(first.strip(), headers, body)


@attrs.frozen
class Frames:
    label: str
    line: int
    #: The path and query of the WebSocket URL.
    target: str
    frames: tuple[str, ...]


def _blocks(lines: list[str], index: int, directive: str, count: int, where: str) -> list[str]:
    blocks: list[str] = []
    while len(blocks) < count:
        while index < len(lines) and not lines[index].strip():
            index += 1
        assert index < len(lines) and lines[index].strip() == directive, f"{where}: expected {directive}"
        content, index = _block(lines, index)
        blocks.append(content)
    return blocks


def examples(text: str) -> list[Exchange | Frames]:
    """The reference's examples, in the order of the page."""
    lines = text.split("\n")
    found: list[Exchange | Frames] = []
    for number, line in enumerate(lines):
        marker = MARKER.match(line)
        if marker is None:
            continue
        where = f"protocol.rst:{number + 1}"
        if marker["kind"] == "exchange":
            request, response = _blocks(lines, number + 1, HTTP_BLOCK, 2, where)
            found.append(Exchange(marker["label"], number + 1, _message(request), _message(response)))
        else:
            url, *frames = _blocks(lines, number + 1, FRAMES_BLOCK, 1, where)[0].split("\n")
            assert url.startswith("// ws://"), f"{where}: the frames' block begins with // ws://host/path"
            target = "/" + url.removeprefix("// ws://").split("/", 1)[1]
            found.append(Frames(marker["label"], number + 1, target, tuple(frames)))
    return found


def webhook_examples(text: str) -> list[tuple[str, int, Message]]:
    """The reference's example webhook requests: label, line and the request."""
    lines = text.split("\n")
    found = []
    for number, line in enumerate(lines):
        marker = WEBHOOK_MARKER.match(line)
        if marker is not None:
            [request] = _blocks(lines, number + 1, HTTP_BLOCK, 1, f"protocol.rst:{number + 1}")
            found.append((marker["label"], number + 1, _message(request)))
    return found


# what differs from run to run


@attrs.define
class Mapping:
    """The documented values bound to the real ones."""

    #: Documented secret (or admin token) → the real one.
    secrets: dict[str, str] = attrs.field(factory=dict)
    #: Documented publisher → its documented secret.
    publishers: dict[str, str] = attrs.field(factory=dict)
    #: Documented epoch → the daemon's.
    epochs: dict[str, str] = attrs.field(factory=dict)

    def epoch(self, documented: str, actual: str, where: str) -> None:
        bound = self.epochs.setdefault(documented, actual)
        assert bound == actual, f"{where}: epoch {documented!r} is {bound!r} elsewhere, {actual!r} here"

    def replace_epochs(self, text: str) -> str:
        for documented, actual in self.epochs.items():
            text = re.sub(rf"(?<![\w.~-]){re.escape(documented)}-(?=\d)", f"{actual}-", text)
        return text


def is_cursor(value: str) -> bool:
    """A position, or a compound cursor (entries joined with ``,``, some empty)."""
    entries = value.split(",")
    return any(entries) and all(not entry or POSITION.match(entry) for entry in entries)


def same_cursor(documented: str, actual: str, mapping: Mapping, where: str) -> None:
    assert is_cursor(actual), f"{where}: {actual!r} is no cursor (documented {documented!r})"
    doc_entries, real_entries = documented.split(","), actual.split(",")
    assert len(doc_entries) == len(real_entries), f"{where}: {actual!r} against documented {documented!r}"
    for doc_entry, real_entry in zip(doc_entries, real_entries, strict=True):
        if not doc_entry or not real_entry:
            assert doc_entry == real_entry, f"{where}: {actual!r} against documented {documented!r}"
            continue
        doc_match, real_match = POSITION.match(doc_entry), POSITION.match(real_entry)
        assert doc_match and real_match
        assert doc_match[2] == real_match[2], f"{where}: sequence of {actual!r}, documented {documented!r}"
        mapping.epoch(doc_match[1], real_match[1], where)


#: String values that differ from run to run whatever happens.
VOLATILE = {"node"}
#: A publisher's Pusher app id and key (``"pusher"``): made with it, so
#: only of the documented form.
PUSHER_APP = {"app_id": re.compile(r"[0-9]{1,20}\Z"), "key": re.compile(r"[a-z0-9]{20}\Z")}


def same_json(documented: Any, actual: Any, mapping: Mapping, where: str) -> None:
    """*actual* has the documented shape and values (see the module's docstring)."""
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        assert set(actual) == set(documented), \
            f"{where}: keys {sorted(actual)} but documented {sorted(documented)}"
        for key, value in documented.items():
            if key == "secret":
                assert isinstance(actual[key], str) and len(actual[key]) >= 43, f"{where}.secret: {actual[key]!r}"
                mapping.secrets[value] = actual[key]
                if isinstance(documented.get("name"), str):
                    mapping.publishers[documented["name"]] = value
            elif key in VOLATILE:
                assert isinstance(actual[key], str), f"{where}.{key}: {actual[key]!r}"
            elif key in PUSHER_APP and where.endswith(".pusher"):
                assert isinstance(actual[key], str) and PUSHER_APP[key].match(actual[key]), \
                    f"{where}.{key}: {actual[key]!r}"
            else:
                same_json(value, actual[key], mapping, f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list) and len(actual) == len(documented), \
            f"{where}: {actual!r} against documented {documented!r}"
        for index, (doc_item, real_item) in enumerate(zip(documented, actual, strict=True)):
            same_json(doc_item, real_item, mapping, f"{where}[{index}]")
    elif isinstance(documented, bool) or documented is None:
        assert actual is documented, f"{where}: {actual!r}, documented {documented!r}"
    elif isinstance(documented, (int, float)):
        assert type(actual) is type(documented), f"{where}: {actual!r} is not like the documented {documented!r}"
    elif isinstance(documented, str) and is_cursor(documented):
        assert isinstance(actual, str), f"{where}: {actual!r}"
        same_cursor(documented, actual, mapping, where)
    else:
        assert actual == documented, f"{where}: {actual!r}, documented {documented!r}"


def events(stream: str) -> list[list[tuple[str, str]]]:
    """The blocks of an event stream, each its fields in order; comment lines dropped."""
    blocks = []
    for chunk in stream.replace("\r\n", "\n").split("\n\n"):
        block = []
        for line in chunk.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            block.append((name, value.removeprefix(" ")))
        if block:
            blocks.append(block)
    return blocks


def same_events(documented: str, actual: str, mapping: Mapping, where: str) -> None:
    doc_blocks, real_blocks = events(documented), events(actual)[:len(events(documented))]
    assert len(real_blocks) == len(doc_blocks), f"{where}: got only {actual!r}"
    for number, (doc_block, real_block) in enumerate(zip(doc_blocks, real_blocks, strict=True)):
        at = f"{where} event {number}"
        assert [name for name, _ in real_block] == [name for name, _ in doc_block], \
            f"{at}: {real_block} against documented {doc_block}"
        for (name, doc_value), (_, real_value) in zip(doc_block, real_block, strict=True):
            if name == "id":
                same_cursor(doc_value, real_value, mapping, f"{at} id")
            elif name == "data" and doc_value.startswith("{"):
                same_json(json.loads(doc_value), json.loads(real_value), mapping, f"{at} data")
            else:
                assert real_value == doc_value, f"{at} {name}: {real_value!r}, documented {doc_value!r}"


# replaying an exchange


def _authorization(value: str, request: Message, body: bytes, mapping: Mapping, where: str) -> str:
    """The documented ``Authorization`` with the real credentials in it."""
    scheme, _, rest = value.partition(" ")
    if scheme == "Basic":
        publisher, _, secret = base64.b64decode(rest).decode().partition(":")
        real = mapping.secrets.get(secret, secret)
        return "Basic " + base64.b64encode(f"{publisher}:{real}".encode()).decode()
    if scheme == "Bearer":
        return "Bearer " + mapping.secrets.get(rest, rest)
    if scheme == "Notifier-HMAC-SHA256":
        params = dict(part.strip().split("=", 1) for part in rest.split(","))
        method, target = request.first.split()[:2]
        documented_secret = mapping.publishers[params["publisher"]]
        # The documented signature is the right one for the documented request.
        assert _signature(documented_secret, method, target, params["timestamp"], body) == params["signature"], \
            f"{where}: the documented signature is not that of the documented request"
        timestamp = str(int(time.time()))
        signature = _signature(mapping.secrets[documented_secret], method, mapping.replace_epochs(target),
                               timestamp, body)
        return f"Notifier-HMAC-SHA256 publisher={params['publisher']}, timestamp={timestamp}, signature={signature}"
    raise AssertionError(f"{where}: unknown Authorization scheme {scheme!r}")


def _signature(secret: str, method: str, target: str, timestamp: str, body: bytes) -> str:
    signed = "\n".join([method, target, timestamp, hashlib.sha256(body).hexdigest()])
    return hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()


def _token(match: re.Match[str], publisher: str, mapping: Mapping, where: str) -> str:
    """A documented subscriber token signed again with the real secret, and a fresh ``exp``."""
    documented = match[1]
    secret = mapping.publishers[publisher]
    try:  # the documented token is a real one, of the documented secret
        claims = jwt.decode(documented, secret.encode(), algorithms=["HS256"], options={"verify_exp": False})
    except jwt.PyJWTError as e:
        raise AssertionError(f"{where}: the documented token is not signed with the documented secret: {e}") from None
    claims["exp"] = int(time.time()) + 300
    return "token=" + jwt.encode(claims, mapping.secrets[secret].encode(), algorithm="HS256")


def real_target(target: str, mapping: Mapping, where: str) -> str:
    """A documented request target with the real epochs and subscriber tokens in it."""
    publisher = target.split("/")[2] if target.startswith("/sub/") else DOC_PUBLISHER
    target = re.sub(r"token=([\w.-]+)", lambda m: _token(m, publisher, mapping, where), target)
    return mapping.replace_epochs(target)


def request_bytes(exchange: Exchange, mapping: Mapping, host: str) -> bytes:
    """The documented request, as the daemon under test must get it."""
    request, where = exchange.request, f"protocol.rst:{exchange.line} ({exchange.label})"
    body = request.body.encode()
    method, target, version = request.first.split()
    lines = [f"{method} {real_target(target, mapping, where)} {version}"]
    for name, value in request.headers:
        if name.lower() == "host":
            value = host
        elif name.lower() == "authorization":
            value = _authorization(value, request, body, mapping, where)
        elif name.lower() == "connection":
            value += ", close"
        else:
            value = mapping.replace_epochs(value)
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if request.header("Connection") is None:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def split_response(data: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """Status, headers and the body received so far (chunks joined); ``None`` before the head is in."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]
    if any(name.lower() == "transfer-encoding" and value.lower() == "chunked" for name, value in headers):
        body = b""
        while True:
            size_line, sep, after = rest.partition(b"\r\n")
            if not sep:
                break
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                raise AssertionError(f"a malformed chunk: {rest[:80]!r}") from None
            body += after[:size]
            if size == 0 or len(after) < size + 2:
                break
            rest = after[size + 2:]
        rest = body
    return int(status_line.split()[1]), headers, rest


async def replay(exchange: Exchange, daemon: Process, mapping: Mapping) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send the exchange's request; the answer (a stream: once it holds the documented events)."""
    on_api = exchange.request.header("Host") == API_HOST
    port = int(daemon.api.rsplit(":", 1)[1]) if on_api else daemon.public_port
    client = await connect(port)
    client.send(request_bytes(exchange, mapping, f"127.0.0.1:{port}"))
    streaming = (exchange.response.header("Content-Type") or "").startswith("text/event-stream")
    wanted = len(events(exchange.response.body))

    def enough(data: bytes) -> bool:
        answer = split_response(data)
        if answer is None:
            return False
        text = answer[2].decode("utf-8", "replace")
        return len(events(text[:text.rfind("\n\n")])) >= wanted  # complete events only

    if streaming:
        await client.wait_for(enough, EXCHANGE_SECONDS)
        client.transport.abortConnection()
    else:
        assert await client.wait_closed(EXCHANGE_SECONDS), \
            f"protocol.rst:{exchange.line} ({exchange.label}): no complete answer in {EXCHANGE_SECONDS} s"
    answer = split_response(bytes(client.data))
    assert answer is not None, f"protocol.rst:{exchange.line} ({exchange.label}): no answer"
    return answer


def check(exchange: Exchange, answer: tuple[int, list[tuple[str, str]], bytes], mapping: Mapping) -> None:
    """The answer is the documented one."""
    where = f"protocol.rst:{exchange.line} ({exchange.label})"
    status, headers, body = answer
    documented = exchange.response
    text = body.decode("utf-8", "replace")
    assert status == documented.status, f"{where}: status {status}, documented {documented.status}: {text[:300]}"
    received = {name.lower(): value for name, value in headers}
    for name, value in documented.headers:
        key = name.lower()
        if key in TRANSIENT_HEADERS:
            continue
        assert key in received, f"{where}: no {name} header in {headers}"
        if key == "notifier-cursor":
            same_cursor(value, received[key], mapping, f"{where} {name}")
        else:
            assert received[key] == value, f"{where}: {name}: {received[key]!r}, documented {value!r}"
    kind = (documented.header("Content-Type") or "").split(";")[0].strip()
    if not documented.body:
        assert body == b"", f"{where}: a body {text[:300]!r}, documented none"
    elif kind == "application/json":
        same_json(json.loads(documented.body), json.loads(body), mapping, where)
    elif kind == "application/javascript":
        doc_call, real_call = JSONP.match(documented.body.strip()), JSONP.match(text)
        assert doc_call and real_call, f"{where}: {text!r} is not the documented JSONP"
        assert real_call[1] == doc_call[1], f"{where}: callback {real_call[1]!r}, documented {doc_call[1]!r}"
        same_json(json.loads(doc_call[2]), json.loads(real_call[2]), mapping, where)
    elif kind == "text/event-stream":
        same_events(documented.body, text, mapping, where)
    else:
        assert text == documented.body.rstrip("\n"), f"{where}: {text!r}, documented {documented.body!r}"


def daemon_config(folder: Path) -> tuple[Path, int, int]:
    """tests.process.write_config's configuration, allowing the examples' origin only."""
    config, public, api = write_config(folder)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[public]\n", f"[public]\nallowed_origins = {json.dumps([ALLOWED_ORIGIN])}\n", 1),
                      encoding="utf-8")
    return config, public, api


async def check_frames(example: Frames, daemon: Process, mapping: Mapping) -> None:
    """The documented frames are the first the daemon sends on that WebSocket."""
    where = f"protocol.rst:{example.line} ({example.label})"
    ws = await websocket(daemon.ws + real_target(example.target, mapping, where), daemon.public_port)
    try:
        for number, frame in enumerate(example.frames):
            same_json(json.loads(frame), json.loads(await ws.next()), mapping, f"{where} frame {number}")
    finally:
        ws.close()
        await bounded(ws.closed, EXCHANGE_SECONDS)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_every_example_exchange_is_what_the_daemon_answers(tmp_path):
    found = examples(REFERENCE.read_text(encoding="utf-8"))
    assert len(found) >= 30 and any(isinstance(e, Frames) for e in found), "the reference has lost its examples"
    config, public, api = daemon_config(tmp_path)
    daemon = Process(config, public, api)
    try:
        await daemon.start()
        status, body = await daemon.admin("POST", "/admin/v1/publishers", {"name": DOC_PUBLISHER})
        assert status == 201, body
        mapping = Mapping(secrets={DOC_SECRET: body["secret"], DOC_ADMIN_TOKEN: ADMIN_TOKEN},
                          publishers={DOC_PUBLISHER: DOC_SECRET})
        for example in found:
            if isinstance(example, Frames):
                await check_frames(example, daemon, mapping)
            else:
                check(example, await replay(example, daemon, mapping), mapping)

        # A documented status that is not the daemon's fails the test.
        health = next(e for e in found if isinstance(e, Exchange) and e.request.first.startswith("GET /healthz"))
        wrong = attrs.evolve(health, response=attrs.evolve(health.response, first="HTTP/1.1 201 Created"))
        with pytest.raises(AssertionError, match="status 200, documented 201"):
            check(wrong, await replay(wrong, daemon, mapping), mapping)
        status, _ = await call("GET", f"{daemon.api}/healthz")
        assert status == 200
    finally:
        await daemon.kill()


@pytest.mark.integration
def test_every_example_webhook_is_signed_with_the_examples_secret():
    found = webhook_examples(REFERENCE.read_text(encoding="utf-8"))
    assert found, "the reference has lost its webhook example"
    for label, line, request in found:
        where = f"protocol.rst:{line} ({label})"
        assert request.first.startswith("POST ") and request.header("Content-Type") == "application/json", where
        match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", request.header("Notifier-Signature") or "")
        assert match is not None, f"{where}: Notifier-Signature is not t=<seconds>,v1=<hex>"
        body = request.body.encode()
        events = json.loads(body)["events"]
        assert events and all(event["ts"] <= int(match[1]) for event in events), where
        # As the reference tells a site to check it: HMAC-SHA256 of t + "." + body, keyed with the secret.
        expected = hmac.new(DOC_SECRET.encode(), match[1].encode() + b"." + body, hashlib.sha256).hexdigest()
        assert match[2] == expected, f"{where}: the signature is not that of the body shown, signed with " \
                                     f"the examples' secret; it would be v1={expected}"


# what the package defines, all in the reference


def _codes_and_statuses() -> dict[str, set[int]]:
    """Every error code the package sets, with the statuses it comes with
    where the source says (an error class's own, or ``status=``)."""
    errors = ast.parse((PACKAGE / "domain" / "errors.py").read_text(encoding="utf-8"))
    classes: dict[str, tuple[int, str]] = {}
    for node in ast.walk(errors):
        if isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Tuple):
                    status, code = (ast.literal_eval(e) for e in statement.value.elts)
                    classes[node.name] = (status, code)
    found: dict[str, set[int]] = {code: {status} for status, code in classes.values()}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                keywords = {k.arg: k.value for k in node.keywords}
                code = keywords.get("code")
                if not isinstance(code, ast.Constant) or not isinstance(code.value, str):
                    continue
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                statuses = found.setdefault(code.value, set())
                status = keywords.get("status")
                if isinstance(status, ast.Constant):
                    statuses.add(status.value)
                elif name in classes:
                    statuses.add(classes[name][0])
                elif name == "_bad":  # notifier.domain.credentials's refusals are Unauthorized
                    statuses.add(401)
            elif isinstance(node, ast.FunctionDef):  # a default code= of a helper
                arguments = node.args.args[-len(node.args.defaults):] if node.args.defaults else []
                for argument, default in zip(arguments, node.args.defaults, strict=True):
                    if argument.arg == "code" and isinstance(default, ast.Constant):
                        found.setdefault(default.value, set()).add(401 if node.name == "_bad" else 0)
    for statuses in found.values():
        statuses.discard(0)
    return found


def _error_table(text: str) -> dict[str, int]:
    """The reference's table of error codes: code → status."""
    section = text.split("\nError codes\n===========\n", 1)[1].split("\nConfiguration\n=============\n", 1)[0]
    return {code: int(status) for code, status in re.findall(r"\* - ``(\w+)``\n\s+- (\d{3})\n", section)}


def test_every_error_code_is_in_the_reference_with_its_status():
    text = REFERENCE.read_text(encoding="utf-8")
    table = _error_table(text)
    defined = _codes_and_statuses()
    assert {"bad_request", "no_such_center", "store_unavailable", "bad_credentials"} <= set(defined)
    generic = {"unauthorized", "forbidden", "not_found", "conflict", "unavailable"}
    for code, statuses in sorted(defined.items()):
        assert f"``{code}``" in text, f"error code {code!r} is not in docs/protocol.rst"
        if code in generic:
            continue
        assert code in table, f"error code {code!r} is missing from the table of Error codes"
        assert statuses <= {table[code]}, f"{code}: the package answers {statuses}, the table says {table[code]}"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, tuple)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_configuration_key_is_in_the_reference_with_its_default():
    text = REFERENCE.read_text(encoding="utf-8")
    section = text.split("\nConfiguration\n=============\n", 1)[1]
    rows = dict(re.findall(r"\* - ``(\[\w+\] \w+)``\n\s+- ``(.+?)``\n", section))
    documented = set()
    for part in fields(Config):
        for key in fields(part.default.__class__):
            name = f"[{part.name}] {key.name}"
            documented.add(name)
            assert name in rows, f"configuration key {name} is not in the Configuration table of docs/protocol.rst"
            assert rows[name] == _toml(key.default), f"{name}: documented default {rows[name]}, " \
                                                     f"the daemon's is {_toml(key.default)}"
    assert set(rows) == documented, f"the reference documents keys the daemon does not know: {set(rows) - documented}"


def test_the_reference_stands_alone():
    text = REFERENCE.read_text(encoding="utf-8")
    outside = re.compile("|".join(re.escape(a + b) for a, b in (
        ("SPEC", ".md"), ("DESIGN", ".md"), ("../", "shared"), ("Part ", "1"), ("Part ", "2"))))
    assert outside.search(text) is None
    # Every example's Basic credentials and tokens are the documented publisher's.
    for value in re.findall(r"^   Authorization: Basic (\S+)$", text, re.M):
        try:
            user, _, _ = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AssertionError(f"not Basic credentials: {value}") from None
        assert user == DOC_PUBLISHER
