"""Python's garbage collector, tuned for a process that runs for hours over a big
ledger (the app, the relay).

A full (generation-2) collection walks every tracked object: over a big ledger's
caches it holds the GIL for 50–100 ms, during which an app draws no frame and a relay
delivers nothing (seen in ``bench/tui.py``'s frame gaps and ``bench/relay.py``'s tail
latency). What exists once such a process has started (modules, opened stores) never
becomes garbage, so the collector stops scanning it, and full collections come a
hundred times less often. Reference counting still frees everything without cycles
at once; this only makes cycle collection rarer.
"""

from __future__ import annotations

import gc

FULL_COLLECTION_EVERY = 1000
"""The collector's third threshold (Python's default is 10): how many collections of
the middle generation come before a full one."""


def tune_for_long_run() -> None:
    """Freeze what exists now out of the collector's scans, and make full
    collections rare. Call once, when the process has started."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
