"""Running coroutines from synchronous tests."""

import asyncio
from concurrent.futures import ThreadPoolExecutor


def run_async(coroutine):
    """asyncio.run in its own thread: Playwright's sync API leaves a running loop in the main thread."""
    with ThreadPoolExecutor(max_workers=1) as runner:
        return runner.submit(asyncio.run, coroutine).result()
