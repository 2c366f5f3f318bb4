"""The backend's uvicorn server, with a drain before it stops."""

import logging
import threading
import time
from types import FrameType

import uvicorn

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """On SIGTERM or Ctrl-C, sets `draining` (the app's) and keeps serving for `drain_s` before it stops.

    /health answers 503 while draining, so a load balancer takes the copy out of rotation
    before it closes its connections; a request already on its way still gets an answer.
    A second signal stops it at once.
    """

    def __init__(self, config: uvicorn.Config, drain_s: float, draining: threading.Event) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self.draining = draining

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_s <= 0 or self.draining.is_set():
            super().handle_exit(sig, frame)
            return
        self.draining.set()
        threading.Thread(target=self._exit_after_drain, args=(sig, frame), name="drain", daemon=True).start()

    def _exit_after_drain(self, sig: int, frame: FrameType | None) -> None:
        logger.info("draining for %g s: /health answers 503, requests are still served", self.drain_s)
        time.sleep(self.drain_s)
        super().handle_exit(sig, frame)
