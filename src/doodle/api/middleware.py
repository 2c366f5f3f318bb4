"""ASGI middleware of the backend."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from doodle.api.metrics import ApiMetrics


class ErrorCountingMiddleware:
    """Counts every answer with status >= 400 in api_errors_total{endpoint}."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_and_count(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self._count(scope)
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        except Exception:
            self._count(scope)  # answered 500 by the last-resort handler
            raise

    def _count(self, scope: Scope) -> None:
        route = scope.get("route")
        endpoint = route.path.rstrip("/") or "/" if route is not None else "unmatched"
        self.metrics.errors.labels(endpoint=endpoint).inc()
