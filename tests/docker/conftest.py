"""Session fixtures for the container tests: an engine that answers and the doodle image, built once."""

import pytest

from tests.utils.docker import build_doodle_image, engine_lock, engine_version, remove_stale_projects


@pytest.fixture(scope="session")
def docker_engine() -> str:
    version = engine_version()
    print(f"docker: {version}; compose: docker-compose 1.29")  # noqa: T201
    return version


@pytest.fixture(scope="session")
def doodle_image(docker_engine):
    """The image of the working tree, built once per run; the engine is this run's meanwhile."""
    with engine_lock():
        for name in remove_stale_projects():
            print(f"took down {name}, left by a test run killed before its clean-up")  # noqa: T201
        seconds = build_doodle_image()
        print(f"doodle image built in {seconds:.0f} s")  # noqa: T201
        yield
