"""A loopback HTTP server that stands in for API Gateway (HTTP API, payload format 2.0).

Each request becomes the event API Gateway would send (binary bodies base64-encoded,
lower-case headers, duplicate headers joined with commas), the handler runs in this
process, and its response goes back as HTTP. Every connection is served by a thread of its
own, as API Gateway accepts any number (so a keep-alive client, such as the openai client,
never blocks another); invocations are what is limited. Like a Lambda container it runs one
at a time; with ``concurrency`` N > 1 it is N warm containers sharing one model
(``ConcurrentHandler``): at most N invocations at once, and further requests wait for a
free one, where AWS would start another container (a cold start) or, at the account's
concurrency limit, throttle (429). What it enforces of the real service: the 10 MB HTTP API
body limit and Lambda's 6 MB synchronous payload limit (413), and the 30 s integration
timeout (503, reported after the handler finishes; time spent waiting for a free container
does not count). It has no route table: unknown paths (``/v1/...`` too) reach the handler,
which answers 404 for the ones it does not serve.

    python -m local serve --bundle demo/bundle --port 3000 --upload clip.wav [--concurrency 10]

    curl -s localhost:3000/health
    curl -s --data-binary @clip.wav -H 'content-type: audio/wav' localhost:3000/transcribe
    curl -s -H 'content-type: application/json' \\
         -d "{\\"audio\\": \\"$(base64 -w0 clip.wav)\\"}" localhost:3000/transcribe
    curl -s -H 'content-type: application/json' \\
         -d '{"s3": {"bucket": "asr-local-input", "key": "uploads/clip.wav"}}' \\
         localhost:3000/transcribe

S3 references resolve against moto's in-process S3 (``--upload`` puts files there).
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qsl, urlsplit

LOOPBACK = "127.0.0.1"
HTTP_API_MAX_BODY_BYTES = 10 * 1024 * 1024
LAMBDA_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
INTEGRATION_TIMEOUT_S = 30.0
# A connection left open and idle is closed after this long (its thread ends).
IDLE_CONNECTION_TIMEOUT_S = 5.0
# Content types API Gateway passes as text; every other body arrives base64-encoded.
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")
TEXT_SUFFIXES = ("+json", "+xml")

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


def is_text(content_type: str) -> bool:
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    return media.startswith(TEXT_TYPES) or media.endswith(TEXT_SUFFIXES)


def build_event(
    method: str, target: str, headers: Message, body: bytes, source_ip: str
) -> dict[str, Any]:
    """The payload-2.0 event API Gateway sends for this request."""
    url = urlsplit(target)
    now = time.time()
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers.items():
        lower = name.lower()
        if lower == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
        else:
            joined[lower] = f"{joined[lower]},{value}" if lower in joined else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(url.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    route_key = f"{method} {url.path}"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": joined,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": joined.get("host", f"{LOOPBACK}"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": url.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex[:16],
            "routeKey": route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body:
        text = _as_text(body) if is_text(joined.get("content-type", "")) else None
        if text is None:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
        else:
            event["body"] = text
    return event


def _as_text(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body for the handler's (payload 2.0) response."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # Payload 2.0: a response without statusCode is a 200 JSON body.
        return 200, [("content-type", "application/json")], json.dumps(result).encode("utf-8")
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers += [(str(name), str(v)) for v in values]
    headers += [("set-cookie", str(c)) for c in result.get("cookies") or []]
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    return int(result["statusCode"]), headers, raw


class ApiGatewayEmulator(ThreadingMixIn, HTTPServer):
    """``invoke`` must be safe to call from ``concurrency`` threads at once."""

    daemon_threads = True
    # server_close() waits for requests in progress (``_requests``), not for idle connections.
    block_on_close = False

    def __init__(
        self, port: int, invoke: Invoke, *, log: bool = True, concurrency: int = 1
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.invoke = invoke
        self.log = log
        self.concurrency = concurrency
        self.idle_timeout: float | None = IDLE_CONNECTION_TIMEOUT_S
        self._containers = threading.BoundedSemaphore(concurrency)
        self._requests = 0
        self._requests_done = threading.Condition()
        # Clients that connect together must not overflow the listen backlog (socketserver's
        # is 5): their connections would be dropped and retried a second or more later.
        self.request_queue_size = max(128, 2 * concurrency)
        super().__init__((LOOPBACK, port), _RequestHandler)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"

    @contextlib.contextmanager
    def request_in_progress(self) -> Iterator[None]:
        with self._requests_done:
            self._requests += 1
        try:
            yield
        finally:
            with self._requests_done:
                self._requests -= 1
                self._requests_done.notify_all()

    @contextlib.contextmanager
    def container(self) -> Iterator[None]:
        """One of the ``concurrency`` warm containers, waited for if all are busy."""
        with self._containers:
            yield

    def server_close(self) -> None:
        """Stop listening, then wait for the requests in progress or waiting for a container."""
        super().server_close()
        with self._requests_done:
            self._requests_done.wait_for(lambda: self._requests == 0)


@contextlib.contextmanager
def serving_in_thread(emulator: ApiGatewayEmulator) -> Iterator[ApiGatewayEmulator]:
    """Serve on a background thread; shut down and join it on exit (tests, benchmarks)."""
    thread = threading.Thread(target=emulator.serve_forever, daemon=True)
    thread.start()
    try:
        yield emulator
    finally:
        emulator.shutdown()
        emulator.server_close()
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("the emulator's server thread did not stop")


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiGatewayEmulator
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        if self.server.idle_timeout is not None:
            self.connection.settimeout(self.server.idle_timeout)

    def _proxy(self) -> None:
        with self.server.request_in_progress():
            self._forward()

    def _forward(self) -> None:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            self._gateway_error(411, "Length Required")
            return
        length = int(self.headers.get("content-length") or 0)
        if length > HTTP_API_MAX_BODY_BYTES:
            self._gateway_error(413, "Request Entity Too Large")
            return
        body = self.rfile.read(length) if length else b""
        event = build_event(self.command, self.path, self.headers, body, self.client_address[0])
        if len(json.dumps(event)) > LAMBDA_SYNC_PAYLOAD_BYTES:
            self._note("the event exceeds Lambda's 6 MB synchronous payload limit")
            self._gateway_error(413, "Request Entity Too Large")
            return
        with self.server.container():
            started = time.perf_counter()
            try:
                result = self.server.invoke(event)
            except Exception:
                self._note("the handler raised:\n" + traceback.format_exc())
                self._gateway_error(500, "Internal Server Error")
                return
            took = time.perf_counter() - started
        if took > INTEGRATION_TIMEOUT_S:
            self._note(f"the handler took longer than API Gateway's {INTEGRATION_TIMEOUT_S:g} s")
            self._gateway_error(503, "Service Unavailable")
            return
        self._send(*http_response(result))

    # http.server dispatches on do_<METHOD>; every method goes to the handler as API Gateway would.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _proxy  # noqa: N815

    def _gateway_error(self, status: int, message: str) -> None:
        body = json.dumps({"message": message}).encode("utf-8")
        self._send(status, [("content-type", "application/json")], body)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in {"content-length", "connection"}:
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.send_header("apigw-requestid", "local")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _note(self, text: str) -> None:
        print(f"[api-gateway emulator] {text}", file=sys.stderr)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log:
            super().log_message(format, *args)
