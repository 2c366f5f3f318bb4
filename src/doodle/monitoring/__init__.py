"""Shipped monitoring configuration: prometheus/ is read by `doodle run`, docker-compose.yml and the tests."""
