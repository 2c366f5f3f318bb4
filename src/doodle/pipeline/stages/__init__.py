"""The seven stages, each runnable as `python -m doodle.pipeline.stages.<stage> --run-dir DIR`."""
