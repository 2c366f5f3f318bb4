"""Run-store engines on the SQLite and PostgreSQL URLs of tests/conftest.py."""

import pytest

from doodle.pipeline import runs


@pytest.fixture
def engine(database_url):
    engine = runs.connect(database_url)
    runs.init_db(engine)
    yield engine
    engine.dispose()
