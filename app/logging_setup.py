"""Logging for the worker: one cheap line per event, configured once."""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """Give the `app` loggers a handler unless the host application configured logging already."""
    app_logger = logging.getLogger("app")
    if app_logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    app_logger.addHandler(handler)
    app_logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
