"""Client of the MLflow model server, with pooled keep-alive connections."""

import logging
from urllib.parse import urlsplit, urlunsplit

import httpx

from doodle.imaging import InvalidImageError

logger = logging.getLogger(__name__)


class ModelServerUnavailableError(Exception):
    """The model server cannot be reached or did not answer in time."""


class ModelServerError(Exception):
    """The model server answered with an error or an unreadable body."""


class ModelClient:
    def __init__(self, invocations_url: str, timeout_s: float, connect_timeout_s: float) -> None:
        self.invocations_url = invocations_url
        parts = urlsplit(invocations_url)
        self.ping_url = urlunsplit((parts.scheme, parts.netloc, "/ping", "", ""))
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            follow_redirects=True,
        )

    async def predict(self, images: list[str], top_k: int | None = None) -> list[dict]:
        """Ranked labels per image, as the pyfunc model returns them."""
        body: dict = {"inputs": images}
        if top_k is not None:
            body["params"] = {"top_k": top_k}
        try:
            response = await self._http.post(self.invocations_url, json=body)
        except httpx.TimeoutException as error:
            raise ModelServerUnavailableError("model server did not answer in time") from error
        except httpx.TransportError as error:
            raise ModelServerUnavailableError("model server is unavailable") from error
        if response.history:  # e.g. a slash redirect: go straight there next time
            self.invocations_url = str(response.url)
        if response.status_code == 400:
            raise InvalidImageError(_error_message(response))
        if response.status_code != 200:
            raise ModelServerError(f"model server answered {response.status_code}: {_error_message(response)}")
        try:
            predictions = response.json()["predictions"]
        except (ValueError, KeyError, TypeError) as error:
            raise ModelServerError("model server sent an unreadable answer") from error
        if not isinstance(predictions, list) or len(predictions) != len(images):
            raise ModelServerError("model server sent the wrong number of predictions")
        return predictions

    async def healthy(self) -> bool:
        try:
            response = await self._http.get(self.ping_url)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))[:300]
    except ValueError:
        return response.text[:300]
