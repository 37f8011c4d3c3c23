"""Docker Hub's names, written once: its domain, the hosts that also mean it, where pushes go,
and the key its credentials live under in ``config.json``. A leaf: it imports nothing."""

from __future__ import annotations

#: The domain a reference without a registry host gets (``app`` → ``docker.io/library/app``).
DOMAIN = "docker.io"
#: The index's old host, which references normalise to ``DOMAIN``.
LEGACY_DOMAIN = "index.docker.io"
#: The host that serves Docker Hub's registry API, where pushes go.
PUSH_HOST = "registry-1.docker.io"
#: Every host that means Docker Hub (a login's server, a ``config.json`` key).
ALIASES = frozenset({DOMAIN, LEGACY_DOMAIN, PUSH_HOST})
#: Docker Hub's key in ``config.json``: the historical index URL, as ``docker login`` writes it.
CONFIG_KEY = "https://index.docker.io/v1/"
