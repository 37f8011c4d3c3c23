"""Structured logs (structlog) through the standard ``logging`` module, secrets redacted.

Every module's logger comes from ``get_logger``: a structlog logger over ``logging.getLogger``
(names under ``engine``), so a library caller's own logging decides what is shown and where; with
none configured, Python shows warnings and worse on stderr. Only the command line calls
``configure``: structlog's and logging's configuration is the process's, so the library leaves
it to whoever owns the process.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: Keys whose values never reach a log line.
SECRET_KEYS = re.compile(r"pass|secret|token|auth|credential", re.IGNORECASE)
REDACTED = "[redacted]"


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event:
        if key != "event" and SECRET_KEYS.search(key):
            event[key] = REDACTED
    return event


class _Logger(structlog.stdlib.BoundLogger):
    """Redacts secrets whatever processors run (a library caller's structlog may have none of
    Hoist's), and skips a line its logger's level leaves out (a debug line per HTTP request
    costs nothing when debug is off)."""

    def _proxy_to_logger(
        self, method_name: str, event: str | None = None, *event_args: Any, **event_kw: Any
    ) -> Any:
        level = _LEVELS.get(method_name)
        if level is not None and not self._logger.isEnabledFor(level):
            return None
        redact_secrets(None, method_name, event_kw)
        return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def get_logger(name: str) -> Any:
    """The structlog logger for ``name`` (``engine.push``, ...), writing to ``logging``."""
    return structlog.wrap_logger(logging.getLogger(name), wrapper_class=_Logger)


def configure(level: str = "warning") -> None:
    """For the process's owner (the CLI): Hoist's lines at ``level`` and worse on stderr."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            redact_secrets,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    engine = logging.getLogger("engine")
    engine.handlers[:] = [handler]
    engine.setLevel(logging.getLevelNamesMapping()[level.upper()])
    engine.propagate = False
