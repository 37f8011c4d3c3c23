"""The per-host gate: after a registry says "slow down", nobody sends to it before it allows.

One 429 with ``Retry-After`` speaks for the whole host, not for the one request that drew it: the
other layers' requests to that host wait too, instead of each collecting its own 429. One gate
serves every push in the process, keyed by registry host (``host[:port]``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["HostGate"]


class HostGate:
    """For each registry host, the time before which no request goes out.

    ``clock`` gives the times that ``hold_until`` takes (monotonic by default); ``sleep`` waits.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._opens_at: dict[str, float] = {}

    def hold_until(self, host: str, when: float) -> None:
        """Keep ``host`` closed until ``when``; a hold already longer stands."""
        key = _key(host)
        self._opens_at[key] = max(when, self._opens_at.get(key, when))

    def hold_for(self, host: str, seconds: float) -> None:
        """Keep ``host`` closed for ``seconds`` from now (a ``Retry-After``)."""
        self.hold_until(host, self._clock() + seconds)

    def remaining(self, host: str) -> float:
        """Seconds until ``host`` opens; 0 when it is open."""
        opens_at = self._opens_at.get(_key(host))
        return 0.0 if opens_at is None else max(0.0, opens_at - self._clock())

    async def wait(self, host: str) -> None:
        """Return once ``host`` is open, however often it is held again meanwhile."""
        while (left := self.remaining(host)) > 0:
            await self._sleep(left)
        # An open host needs no entry; forgetting it keeps the map as small as the throttled set.
        self._opens_at.pop(_key(host), None)


def _key(host: str) -> str:
    return host.lower()
