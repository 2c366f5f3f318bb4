"""The model server is killed under load: the backend answers 503 at once, never hangs, and recovers."""

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from doodle.config import settings_under
from doodle.stack.catalogue import backend
from doodle.stack.supervisor import stop
from tests.utils.aio import run_async
from tests.utils.images import b64
from tests.utils.network import free_port
from tests.utils.services import start_model_server, start_or_fail

pytestmark = pytest.mark.e2e

USERS = 8


async def drive(url: str, bodies: list[dict], stop: asyncio.Event, outcomes: list) -> None:
    """USERS clients predicting back to back; records (sent_at, status or error, seconds)."""

    async def user(n: int) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    async with session.post(url, json=bodies[(n + len(outcomes)) % len(bodies)]) as answer:
                        await answer.read()
                        outcome = answer.status
                except (aiohttp.ClientError, TimeoutError) as error:
                    outcome = type(error).__name__
                outcomes.append((sent, outcome, time.monotonic() - sent))

    await asyncio.gather(*(user(n) for n in range(USERS)))


def test_backend_answers_503_quickly_while_model_server_is_dead_and_recovers(served_store, tmp_path, quickdraw_test):
    model_port = free_port()
    backend_settings = settings_under(tmp_path, mlflow_hosted_model_url=f"http://127.0.0.1:{model_port}/invocations")
    api = backend(backend_settings, "127.0.0.1", free_port())
    model_server = start_model_server(served_store, model_port, hot_swap=True)
    start_or_fail(api, backend_settings)
    bodies = [{"inputs": b64(image)} for image in quickdraw_test.images[:200]]
    outcomes: list = []
    timeline: dict[str, float] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(drive(api.url.removesuffix("/docs") + "/invocations/", bodies, stop, outcomes))
        await asyncio.sleep(2)
        timeline["killed"] = time.monotonic()
        os.killpg(model_server.process.pid, signal.SIGKILL)
        await asyncio.sleep(3)
        timeline["restarting"] = time.monotonic()
        restarted = await asyncio.to_thread(start_model_server, served_store, model_port, True)
        timeline["healthy"] = time.monotonic()
        model_server.process = restarted.process
        await asyncio.sleep(3)
        stop.set()
        await load

    try:
        run_async(scenario())
    finally:
        stop([model_server, api])

    statuses = {outcome for _, outcome, _ in outcomes}
    assert statuses == {200, 503}  # nothing else: no 500, no 502, no dropped connection
    assert max(seconds for _, _, seconds in outcomes) < 1.0  # never hangs
    dead = [o for sent, o, _ in outcomes if timeline["killed"] + 0.5 < sent < timeline["restarting"]]
    assert dead and set(dead) == {503}
    recovered = [sent for sent, o, _ in outcomes if sent > timeline["healthy"] and o == 200]
    assert recovered and recovered[0] - timeline["healthy"] < 2.0
    last_second = [o for sent, o, _ in outcomes if sent > timeline["healthy"] + 2.0]
    assert last_second and set(last_second) == {200}
