"""Daemon-wide settings, read from ``daemon.json`` in the store's root with Docker's key names.

Flags given to one run add to these (``--insecure-registry``) or override them
(``--max-concurrent-uploads``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import SettingsError

FILE_NAME = "daemon.json"
DEFAULT_MAX_CONCURRENT_UPLOADS = 5
#: Keep-alive connections to the registries, and so the most uploads of small layers at once
#: (``max-concurrent-uploads`` counts big layers; small ones share a slot).
CONNECTIONS = 32


@dataclass(frozen=True)
class Settings:
    insecure_registries: tuple[str, ...] = ()
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS
    #: Hoist's own key: False makes loopback registries secure (TLS verified, no http).
    insecure_loopback: bool = True

    @classmethod
    def from_json(cls, document: Any, where: str) -> Settings:
        if not isinstance(document, dict):
            raise SettingsError(f"{where}: expected a JSON object")
        insecure = document.get("insecure-registries", [])
        uploads = document.get("max-concurrent-uploads", DEFAULT_MAX_CONCURRENT_UPLOADS)
        loopback = document.get("insecure-loopback", True)
        if not isinstance(insecure, list) or not all(isinstance(h, str) for h in insecure):
            raise SettingsError(f"{where}: insecure-registries must be a list of strings")
        if not isinstance(uploads, int) or isinstance(uploads, bool) or uploads < 1:
            raise SettingsError(f"{where}: max-concurrent-uploads must be a positive integer")
        if not isinstance(loopback, bool):
            raise SettingsError(f"{where}: insecure-loopback must be true or false")
        return cls(
            insecure_registries=tuple(insecure),
            max_concurrent_uploads=uploads,
            insecure_loopback=loopback,
        )


def read_settings(root: Path) -> Settings:
    """The root's daemon.json, or the defaults when there is none. Blocking: call off the loop."""
    path = root / FILE_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        raise SettingsError(f"{path}: {exc.strerror}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from exc
    return Settings.from_json(document, str(path))
