"""Run-store engines on the SQLite and PostgreSQL URLs of tests/conftest.py."""

import pytest

from doodle.pipeline import store


@pytest.fixture
def engine(database_url):
    engine = store.connect(database_url)
    store.init_db(engine)
    yield engine
    engine.dispose()
