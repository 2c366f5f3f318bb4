"""Run-store engines: a SQLite file and the real PostgreSQL on 127.0.0.1:5432."""

import os
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from doodle.pipeline import store

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'pipeline.db'}"


@pytest.fixture
def postgresql_url():
    """A fresh schema in the real PostgreSQL; unreachable fails in CI and skips elsewhere."""
    admin = store.connect(POSTGRES_URL)
    try:
        with admin.connect():
            pass
    except OperationalError as error:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}")
        pytest.skip("PostgreSQL is unreachable")
    schema = f"doodle_test_{uuid.uuid4().hex[:8]}"
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def engine(database_url):
    engine = store.connect(database_url)
    store.init_db(engine)
    yield engine
    engine.dispose()
