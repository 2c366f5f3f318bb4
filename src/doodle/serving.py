"""Model server that follows the deployment alias: MLflow's scoring app, hot-swapped.

It serves `models:/<name>@<alias>` with MLflow's own scoring protocol. A thread
polls the registry; when the alias moves it loads the new version beside the
old one and swaps the app reference in one assignment, so requests in flight
finish on the old model and no request fails during a rollout.
"""

import asyncio
import json
import logging
import threading

import mlflow
from mlflow.pyfunc import scoring_server
from starlette.types import ASGIApp, Receive, Scope, Send

from doodle.model.registry import alias_version

logger = logging.getLogger(__name__)


class HotSwapModelServer:
    """An ASGI app: `/model-version` reports the served version, everything else goes to MLflow's app."""

    def __init__(self, name: str, alias: str, poll_s: float = 2.0) -> None:
        self.name, self.alias, self.poll_s = name, alias, poll_s
        self.version: str | None = None
        self._app: ASGIApp | None = None
        self._stop = threading.Event()

    def refresh(self) -> bool:
        """Load the alias's version if it changed; returns True when it swapped."""
        version = alias_version(self.name, self.alias)
        if version is None or version == self.version:
            return False
        model = mlflow.pyfunc.load_model(f"models:/{self.name}/{version}")
        self._app, previous = scoring_server.init(model), self.version
        self.version = version
        logger.info("model swapped name=%s from=%s to=%s", self.name, previous, version)
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:
                logger.exception("model refresh failed; still serving version=%s", self.version)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "http" and scope["path"] == "/model-version":
            body = json.dumps({"name": self.name, "alias": self.alias, "version": self.version}).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        if self._app is None:  # startup has not loaded a model
            raise RuntimeError(f"no model at models:/{self.name}@{self.alias}")
        await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.refresh)
                    if self._app is None:
                        raise RuntimeError(f"no model at models:/{self.name}@{self.alias}")
                except Exception as error:
                    logger.exception("model server could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                threading.Thread(target=self._poll, name="alias-poller", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._stop.set()
                await send({"type": "lifespan.shutdown.complete"})
                return
