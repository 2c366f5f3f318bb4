"""Logging set-up shared by every entry point."""

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_HANDLER_FLAG = "_doodle_handler"


def configure_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    """Log to stderr and, when given, to `log_file`. Safe to call more than once."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]:
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        setattr(handler, _HANDLER_FLAG, True)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
