"""ASGI middleware of the backend: counting error answers and capping request bodies."""

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from doodle.api.metrics import ApiMetrics


class ErrorCountingMiddleware:
    """Counts every answer with status >= 400 in api_errors_total{endpoint, status}."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_and_count(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self._count(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        except Exception:
            self._count(scope, 500)  # answered by the last-resort handler
            raise

    def _count(self, scope: Scope, status: int) -> None:
        route = scope.get("route")
        endpoint = route.path.rstrip("/") or "/" if route is not None else "unmatched"
        self.metrics.errors.labels(endpoint=endpoint, status=str(status)).inc()


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413 and a JSON detail that names the limit.

    The check runs when the route reads the body, against the declared Content-Length and
    against the bytes received (a chunked body declares none), so nothing over the limit is
    read and the 413 is counted for its route. Starlette's own limit answers in plain text.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            if declared is not None and declared > self.max_bytes:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, receive_within_limit, send)

    def _too_large(self) -> HTTPException:
        # FastAPI lets an HTTPException raised while reading the body through to its handler.
        return HTTPException(413, f"request body is too large: the limit is {self.max_bytes} bytes")


def _content_length(scope: Scope) -> int | None:
    try:
        return int(Headers(scope=scope)["content-length"])
    except (KeyError, ValueError):
        return None
