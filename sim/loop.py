"""An asyncio event loop on simulated time, with no real I/O.

The relay and the sync client are asyncio code; the simulator runs them unchanged on
this loop. Its clock is a number the loop itself moves: when nothing is ready to run,
instead of sleeping until the next timer it jumps the clock to it. With the network
simulated too (``sim.net``) and every source of randomness seeded, the order in which
callbacks run is a function of the seed alone: one seed replays the same run.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

START_S = 1_000.0
"""Where simulated time starts (any positive number: asyncio only compares times)."""


SPINS_MAX = 2_000_000
"""Passes of the loop in a row without simulated time moving before the world counts
as spinning (a busy world makes a few hundred between two timers)."""


class StalledError(RuntimeError):
    """Nothing is ready and no timer is due: the world can never move again."""


class _Clock:
    def __init__(self) -> None:
        self.now = START_S


class _VirtualSelector(selectors.BaseSelector):
    """A selector that never waits: asked to wait ``t`` seconds, it moves the clock."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self._keys: dict[Any, selectors.SelectorKey] = {}
        self.spins = 0  # passes in a row with something ready (time not moving)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, id(fileobj), events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise StalledError("the simulated world stalled: nothing ready, no timer due")
        if timeout > 0:
            self.clock.now += timeout
            self.spins = 0
        else:
            self.spins += 1
            if self.spins > SPINS_MAX:
                raise StalledError(f"the simulated world spins: {SPINS_MAX:,} passes of the "
                                   "loop without time moving (a task that never waits)")
        return []

    def get_map(self) -> Any:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class SimLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is simulated (see the module docstring)."""

    def __init__(self) -> None:
        self._clock = _Clock()
        super().__init__(selector=_VirtualSelector(self._clock))
        self.set_exception_handler(self._unhandled)
        self.unhandled: list[str] = []
        """Exceptions no task or callback handled (the world reads them as failures)."""

    def _unhandled(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.unhandled.append(f"{context.get('message', '')}: {exc!r}")

    def time(self) -> float:
        """Simulated seconds."""
        return self._clock.now

    @property
    def elapsed_s(self) -> float:
        """Simulated seconds since the loop was made."""
        return self._clock.now - START_S
