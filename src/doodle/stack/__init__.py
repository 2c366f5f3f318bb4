"""The local stack of `doodle run`: what runs (catalogue), how it is watched (supervisor)."""
