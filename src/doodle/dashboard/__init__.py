"""The pipeline viewer: a page, JSON and Prometheus metrics over the run store."""
