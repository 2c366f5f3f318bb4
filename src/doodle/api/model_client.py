"""Client of the MLflow model server over pooled keep-alive connections (aiohttp)."""

import json
import logging
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from doodle.imaging import InvalidImageError

logger = logging.getLogger(__name__)


class ModelServerUnavailableError(Exception):
    """The model server cannot be reached or did not answer in time."""


class ModelServerError(Exception):
    """The model server answered with an error or an unreadable body."""


# One image's answer, as the pyfunc model gives it: labels best first, their probabilities, model_version.
Prediction = dict[str, Any]


class Predictor(Protocol):
    """What the backend needs from the model server: ModelClient, or a fake in tests."""

    async def predict(
        self, images: list[str], top_k: int | None = None, model_info: bool = False
    ) -> list[Prediction]: ...

    async def healthy(self) -> bool: ...

    async def aclose(self) -> None: ...


class ModelClient:
    """Must be created inside the running event loop (e.g. in the app's lifespan)."""

    def __init__(self, invocations_url: str, timeout_s: float, connect_timeout_s: float, connections: int = 8) -> None:
        self.invocations_url = invocations_url
        parts = urlsplit(invocations_url)
        self.ping_url = urlunsplit((parts.scheme, parts.netloc, "/ping", "", ""))
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s),
            connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=30),
        )

    async def predict(self, images: list[str], top_k: int | None = None, model_info: bool = False) -> list[Prediction]:
        """Ranked labels per image, as the pyfunc model returns them; see its `predict` for the params."""
        body: dict[str, Any] = {"inputs": images}
        params = {"top_k": top_k} if top_k is not None else {}
        if model_info:
            params["model_info"] = True
        if params:
            body["params"] = params
        try:
            async with self._session.post(self.invocations_url, json=body) as response:
                if response.history:  # e.g. a slash redirect: go straight there next time
                    self.invocations_url = str(response.url)
                status, text = response.status, await response.text()
        except TimeoutError as error:
            raise ModelServerUnavailableError("model server did not answer in time") from error
        except aiohttp.ClientError as error:
            raise ModelServerUnavailableError("model server is unavailable") from error
        if status == 400:
            raise InvalidImageError(_error_message(text))
        if status != 200:
            raise ModelServerError(f"model server answered {status}: {_error_message(text)}")
        try:
            predictions = json.loads(text)["predictions"]
        except (ValueError, KeyError, TypeError) as error:
            raise ModelServerError("model server sent an unreadable answer") from error
        if not isinstance(predictions, list) or len(predictions) != len(images):
            raise ModelServerError("model server sent the wrong number of predictions")
        return predictions

    async def healthy(self) -> bool:
        try:
            async with self._session.get(self.ping_url) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def aclose(self) -> None:
        await self._session.close()


def _error_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300]
    return str(body.get("message", text) if isinstance(body, dict) else text)[:300]
