"""The viewer reads the same run store as the pipeline: reuse its SQLite and PostgreSQL fixtures."""

from tests.pipeline.conftest import database_url, postgresql_url, sqlite_url  # noqa: F401
