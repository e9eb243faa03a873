"""The worker's logging, shared by its entry points (the handler, a multi-GPU job's ranks).

`configure_logging(level)`: `level` to stderr; the HTTP clients' loggers (httpx, httpcore,
huggingface_hub's httpx2/httpcore2, urllib3) at WARNING, since at INFO they write every
request's full URL and the worker's downloads and uploads go to signed URLs whose query
string is the credential (see `trainer.handler`).
"""

from __future__ import annotations

import logging

# Loggers that write request URLs (signed URLs are credentials): WARNING and above only.
QUIET_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2", "urllib3")


def configure_logging(level: int = logging.INFO) -> None:
    """The worker's logging: `level` to stderr, the HTTP clients quiet (see the docstring)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
