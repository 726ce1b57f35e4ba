"""The API's front door: an ASGI middleware in front of the BentoML app that bounds what a client can make a
worker do, checks the optional bearer token, keeps customer data out of the logs and keeps the OpenAPI document
in agreement with the answers.

Before any byte of a request body is parsed:

* **authentication** — with ``JOURNEY_API_TOKEN`` set, every route but health (``/livez``, ``/readyz``,
  ``/healthz``) and the API's documentation (``/``, ``/docs.json``) needs ``Authorization: Bearer <token>``
  (compared in constant time); 401 otherwise. ``/update`` and ``/forget`` change the server's state, so they
  are never open when a token is set.
* **media type** — the scoring routes take ``application/json`` only (no Content-Type is read as JSON): any other
  type, ``multipart/form-data`` included, gets 415 naming it, before BentoML's form parser sees it.
* **size** — a Content-Length over ``JOURNEY_MAX_BODY_MB`` gets 413 at once; a streamed (chunked) body is
  counted while it is read and gets 413 as soon as it passes the limit. A client sending large bodies should
  send ``Expect: 100-continue`` (curl does) so that a refused body is never sent.
* **time** — a body not received within ``JOURNEY_BODY_TIMEOUT`` seconds gets 408; the whole request is
  bounded by BentoML's traffic timeout (``BENTOML_TIMEOUT``, 120 s by default), which answers 504.
* **memory** — a worker parses and scores at most ``JOURNEY_MAX_INFLIGHT_MB`` of request bodies at once (one
  request is always let through): beyond it, 503 with ``Retry-After``. With the body limit this bounds the
  worker's memory whatever clients send (README, "Serving": measured). After a large request the C heap is
  trimmed so that its memory goes back to the system.

Every refused request (4xx) is logged at WARNING with the route, the status and each problem's location and
kind only — never a customer id or a value; ``JOURNEY_LOG_REQUEST_DETAIL=true`` adds the messages (which
name both) for debugging. BentoML's own ERROR log of a refused request's traceback (it holds the values) is
dropped by :class:`ClientErrorLogFilter`.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

from serving.config import ServingConfig
from serving.schemas import ErrorResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "JOURNEY_API_TOKEN"
BODY_ROUTES = ("/predict", "/explain", "/update", "/forget")  # POST, JSON body
STATE_ROUTES = ("/update", "/forget")  # change the server's state
HEALTH_PATHS = ("/livez", "/readyz", "/healthz")
DOC_PATHS = ("/", "/docs.json")
DOC_PREFIXES = ("/static_content/", "/assets/")
JSON_MEDIA_TYPE = "application/json"
TRIM_ABOVE_BYTES = 1 << 20  # trim the C heap after requests with larger bodies
LOGGED_BODY_BYTES = 1 << 16  # a refusal's body is read for the log up to this size
BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"


def api_token(environ: MutableMapping[str, str] | None = None) -> str | None:
    """The bearer token clients must send, from ``JOURNEY_API_TOKEN`` (unset or empty: no authentication)."""
    token = (os.environ if environ is None else environ).get(TOKEN_VARIABLE, "")
    return token or None


class RequestGuard:
    """ASGI middleware: authentication, media type, body size and time, in-flight memory, refusal logs."""

    def __init__(self, app: App, config: ServingConfig | None = None, token: str | None = None,
                 openapi: Callable[[dict[str, Any], bool], dict[str, Any]] | None = None) -> None:
        self.app = app
        self.config = config or ServingConfig.from_env()
        token = token if token is not None else api_token()
        self.token = f"Bearer {token}".encode() if token else None
        self.openapi = openapi or fix_openapi
        self.inflight = 0  # body bytes of the requests this worker is reading, parsing or scoring
        self._trim = _malloc_trim()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if self.token is not None and not _is_open(path) and not self._authorized(scope):
            await self._refuse(scope, send, 401, "auth", f"{method} {path} needs the header 'Authorization: Bearer "
                               f"<token>' ({TOKEN_VARIABLE} is set on the server)",
                               headers=[(b"www-authenticate", b'Bearer realm="journey"')])
            return
        if path == "/docs.json" and method == "GET":
            await self._openapi(scope, receive, send)
            return
        if method != "POST" or path not in BODY_ROUTES:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
        if media_type not in ("", JSON_MEDIA_TYPE):
            await self._refuse(scope, send, 415, "media_type", f"Content-Type {media_type!r} is not supported: send "
                               f"the request body as {JSON_MEDIA_TYPE}", loc=["header", "content-type"])
            return
        limit = self.config.max_body_bytes
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, 413, "body", f"the body is {declared} bytes (Content-Length); the limit "
                               f"is {limit} bytes (JOURNEY_MAX_BODY_MB = {self.config.max_body_mb:g})")
            return
        if declared is not None and self._over_budget(declared):
            await self._busy(scope, send)
            return
        reading = _Reading()
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the read in a new Task (an extra loop cycle per request)
            async with asyncio.timeout(self.config.body_timeout):
                body = await self._read_body(receive, limit, reading)
        except (_BodyTooLarge, _OverBudget, _Disconnected, TimeoutError) as error:
            self.inflight -= reading.bytes
            if isinstance(error, _BodyTooLarge):
                await self._refuse(scope, send, 413, "body", f"the body passed {limit} bytes while it was read; "
                                   f"the limit is {limit} bytes (JOURNEY_MAX_BODY_MB = {self.config.max_body_mb:g})")
            elif isinstance(error, _OverBudget):
                await self._busy(scope, send)
            elif isinstance(error, TimeoutError):
                await self._refuse(scope, send, 408, "body", f"the body was not received within "
                                   f"{self.config.body_timeout:g} s (JOURNEY_BODY_TIMEOUT)")
            return  # a client that went away gets no answer
        read = reading.bytes
        sent_body = False

        async def replay() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, self._logging_send(scope, send))
        finally:
            self.inflight -= read
            if read > TRIM_ABOVE_BYTES and self._trim is not None:
                del body
                await asyncio.get_running_loop().run_in_executor(None, self._trim, 0)

    # ------------------------------------------------------------------ body
    async def _read_body(self, receive: Receive, limit: int, reading: _Reading) -> bytes:
        """The whole body, counted into ``inflight`` as it arrives; raises as soon as it passes a limit."""
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            if chunk:
                if reading.bytes + len(chunk) > limit:
                    raise _BodyTooLarge
                if self._over_budget(len(chunk), reading=reading.bytes):
                    raise _OverBudget
                reading.bytes += len(chunk)
                self.inflight += len(chunk)
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _over_budget(self, size: int, reading: int = 0) -> bool:
        """True when ``size`` more bytes would pass the in-flight budget (one request always goes through)."""
        others = self.inflight - reading
        return others > 0 and self.inflight + size > self.config.max_inflight_mb * 2**20

    # ------------------------------------------------------------------ auth
    def _authorized(self, scope: Scope) -> bool:
        sent = _headers(scope).get(b"authorization", b"")
        return self.token is not None and hmac.compare_digest(sent, self.token)

    # ------------------------------------------------------------------ answers
    async def _busy(self, scope: Scope, send: Send) -> None:
        await self._refuse(scope, send, 503, "busy", f"this worker is already handling "
                           f"{self.config.max_inflight_mb:g} MiB of requests (JOURNEY_MAX_INFLIGHT_MB); retry shortly",
                           headers=[(b"retry-after", b"1")])

    async def _refuse(self, scope: Scope, send: Send, status: int, kind: str, message: str,
                      loc: list[Any] | None = None, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        body = ErrorResponse(error=message, detail=[{"loc": loc or ["body"], "msg": message, "type": kind}])
        await _send_json(send, status, body.model_dump(), headers)
        _log_refusal(scope, status, [{"loc": loc or ["body"], "type": kind, "msg": message}], self.config)

    def _logging_send(self, scope: Scope, send: Send) -> Send:
        """``send`` that logs a 4xx answer's problem locations and kinds (never its messages unless asked)."""
        status = 0
        held: list[bytes] = []
        size = 0

        async def logging_send(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and 400 <= status < 500:
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= LOGGED_BODY_BYTES:
                    held.append(chunk)
                if not message.get("more_body", False):
                    _log_refusal(scope, status, _problems(b"".join(held) if size <= LOGGED_BODY_BYTES else b""),
                                 self.config)
            await send(message)

        return logging_send

    async def _openapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """BentoML's OpenAPI document, made to agree with the answers (:func:`fix_openapi`)."""
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        if start.get("status") != 200:
            await _send_json(send, start.get("status", 500), json.loads(b"".join(chunks) or b"{}"))
            return
        spec = self.openapi(json.loads(b"".join(chunks)), self.token is not None)
        await _send_json(send, 200, spec)


class _Reading:
    bytes = 0  # of the body received so far (counted in RequestGuard.inflight)


class _BodyTooLarge(Exception):
    pass


class _OverBudget(Exception):
    pass


class _Disconnected(Exception):
    pass


def _is_open(path: str) -> bool:
    return path in HEALTH_PATHS or path in DOC_PATHS or path.startswith(DOC_PREFIXES)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", [])}


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # uvicorn refuses a malformed Content-Length before the app sees it


async def _send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def _problems(body: bytes) -> list[dict[str, Any]]:
    try:
        detail = json.loads(body).get("detail", [])
    except (ValueError, AttributeError):
        return []
    return [item for item in detail if isinstance(item, dict)] if isinstance(detail, list) else []


def _log_refusal(scope: Scope, status: int, problems: list[dict[str, Any]], config: ServingConfig) -> None:
    """One WARNING line: route, status, and where and what each problem is — no ids, no values."""
    where = "; ".join(f"{_location(p.get('loc'))} {str(p.get('type', '?'))[:40]}" for p in problems[:20])
    more = f" (+{len(problems) - 20} more)" if len(problems) > 20 else ""
    line = f"{scope['method']} {scope['path']} -> {status}: {len(problems)} problem(s): {where}{more}"
    if config.log_request_detail:
        line += " | detail: " + " | ".join(str(p.get("msg", "")) for p in problems)
    log.warning(line)


def _location(loc: Any) -> str:
    if not isinstance(loc, list):
        return "?"
    return "/".join(str(part)[:32] for part in loc)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim (returns freed heap pages to the system), or None where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


class ClientErrorLogFilter(logging.Filter):
    """Drops BentoML's ERROR record (with traceback) of a request it refused with a 4xx: the traceback holds the
    request's values. :class:`RequestGuard` logs the refusal without them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not str(record.msg).startswith("Exception on"):
            return True
        error = record.exc_info[1]
        if isinstance(error, ValidationError):
            return False
        return not (isinstance(error, BentoMLException) and error.error_code.value < 500)


def quiet_client_errors() -> None:
    """Install :class:`ClientErrorLogFilter` on BentoML's request logger (once)."""
    logger = logging.getLogger(BENTOML_REQUEST_LOGGER)
    if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(ClientErrorLogFilter())


# ---------------------------------------------------------------------------------------------- OpenAPI
ERROR_ANSWERS = {
    400: "Bad input: every problem with its location (customers, i, events, j, field) and a message naming the "
         "customer, the event index and the field.",
    401: "Missing or wrong 'Authorization: Bearer <token>' (only when the server has JOURNEY_API_TOKEN set).",
    408: "The body was not received within JOURNEY_BODY_TIMEOUT seconds.",
    413: "Over a limit: the body (JOURNEY_MAX_BODY_MB, checked before parsing), customers per request "
         "(JOURNEY_MAX_CUSTOMERS) or events per customer (JOURNEY_MAX_EVENTS).",
    415: "A Content-Type other than application/json.",
    503: "The worker is at its in-flight limit (JOURNEY_MAX_INFLIGHT_MB); retry after the Retry-After seconds.",
    504: "Not answered within the request timeout (BENTOML_TIMEOUT).",
}
CONFLICT = "The customer's incremental state is not the one events_seen says (evicted, restarted, another worker)."


def fix_openapi(spec: dict[str, Any], authenticated: bool = False) -> dict[str, Any]:
    """Make BentoML's generated document say what the API does: a required JSON body, every 4xx of each
    operation with the shape of its ``detail``, 409 for /update, and the bearer scheme when a token is set."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    answer = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("404", None)
            responses.pop(404, None)
            if path in BODY_ROUTES and method == "post":
                operation.setdefault("requestBody", {})["required"] = True
                for status, description in ERROR_ANSWERS.items():
                    responses[str(status)] = {"description": description, **answer}
                    responses.pop(status, None)
                if path == "/update":
                    responses["409"] = {"description": CONFLICT, **answer}
            if authenticated and not _is_open(path):
                responses["401"] = {"description": ERROR_ANSWERS[401], **answer}
                operation["security"] = [{"bearer": []}]
    if authenticated:
        spec["components"].setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
    return spec
