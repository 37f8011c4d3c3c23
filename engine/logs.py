"""Structured logs (structlog) through the standard ``logging`` module, secrets redacted.

Every module's logger comes from ``get_logger``: a ``Logger`` over ``logging.getLogger`` (names
under ``engine``) whose lines structlog renders, so a library caller's own logging decides what is
shown and where; with
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


class Logger:
    """A module's logger: ``log.info("event", key=value)``, through ``logging.getLogger(name)``.

    A line its logger's level leaves out costs a level check (a debug line per HTTP request is
    free when debug is off); one that goes out has its secrets redacted, whatever processors a
    caller's structlog runs, and is rendered by structlog, imported only then: a push that logs
    nothing never pays for importing it (tens of milliseconds of a no-op push's start-up).
    """

    def __init__(self, name: str) -> None:
        self._stdlib = logging.getLogger(name)
        self._structured: Any = None

    def debug(self, event: str, **values: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._emit(logging.INFO, "info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._emit(logging.WARNING, "warning", event, values)

    def error(self, event: str, **values: Any) -> None:
        self._emit(logging.ERROR, "error", event, values)

    def exception(self, event: str, **values: Any) -> None:
        """An error line with the exception being handled."""
        self._emit(logging.ERROR, "exception", event, values)

    def _emit(self, level: int, method: str, event: str, values: dict[str, Any]) -> None:
        if not self._stdlib.isEnabledFor(level):
            return
        redact_secrets(None, method, values)
        getattr(self._structlog(), method)(event, **values)

    def _structlog(self) -> Any:
        if self._structured is None or _wanted is not None:
            structlog = _structlog()
            # A lazy proxy: it renders with whatever structlog is configured with at the time.
            self._structured = structlog.wrap_logger(
                self._stdlib, wrapper_class=structlog.stdlib.BoundLogger
            )
        return self._structured


def get_logger(name: str) -> Logger:
    """The logger for ``name`` (``engine.push``, ...)."""
    return Logger(name)


#: Whether the process's owner asked for Hoist's structlog rendering (``configure``), not yet
#: applied because structlog is not imported yet.
_wanted: bool | None = None


def configure(level: str = "warning") -> None:
    """For the process's owner (the CLI): Hoist's lines at ``level`` and worse on stderr, each
    with its time and level. structlog is configured when a first line goes out."""
    global _wanted
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    engine = logging.getLogger("engine")
    engine.handlers[:] = [handler]
    engine.setLevel(logging.getLevelNamesMapping()[level.upper()])
    engine.propagate = False
    _wanted = True


def _structlog() -> Any:
    """structlog, imported now, and configured as ``configure`` asked if it has not been yet."""
    global _wanted
    import structlog

    if _wanted is None:
        return structlog
    _wanted = None
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            redact_secrets,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        cache_logger_on_first_use=True,
    )
    return structlog
