"""Run ``tally-relay`` and record where its event loop stalls (a latency tool).

    python bench/stallwatch.py OUT_FILE [tally-relay arguments…]

A watchdog thread samples the main thread's stack every 5 ms while the loop has not
ticked for ``STALL_MS``; at exit the sampled stacks are written to ``OUT_FILE``, the
most frequent first, with how many stalls there were and how long the longest took.
``bench/relay.py --stalls FILE`` starts the relay through it.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import sys
import threading
import time
import traceback
from pathlib import Path

STALL_MS = 40.0
SAMPLE_S = 0.005


def main() -> int:
    """Start the watchdog, then the relay's own command line."""
    out = Path(sys.argv[1])
    sys.argv = ["tally-relay", *sys.argv[2:]]
    main_id = threading.get_ident()
    beat = [time.monotonic()]
    samples: collections.Counter[str] = collections.Counter()
    stalls: list[float] = []
    events: list[str] = []  # per stall: when, how long, where it was first seen
    done = threading.Event()

    def watch() -> None:
        stalled_since: float | None = None
        where = ""
        while not done.wait(SAMPLE_S):
            lag = time.monotonic() - beat[0]
            if lag * 1000 < STALL_MS:
                if stalled_since is not None:
                    took = time.monotonic() - stalled_since
                    stalls.append(took)
                    events.append(f"{time.time():.2f} {took * 1000:.0f} ms {where}")
                    stalled_since = None
                continue
            frame = sys._current_frames().get(main_id)
            if stalled_since is None:
                stalled_since = beat[0]
                tail = traceback.extract_stack(frame, limit=4) if frame else []
                where = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                   for f in reversed(tail))
            if frame is not None:
                stack = "".join(traceback.format_stack(frame, limit=14))
                samples[stack] += 1

    real_new_event_loop = asyncio.new_event_loop

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = real_new_event_loop()

        def tick() -> None:
            beat[0] = time.monotonic()
            loop.call_later(0.002, tick)

        loop.call_soon(tick)
        return loop

    asyncio.new_event_loop = new_event_loop  # type: ignore[assignment]
    asyncio.events.new_event_loop = new_event_loop  # type: ignore[assignment]
    threading.Thread(target=watch, daemon=True).start()
    gc_started = [0.0]

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.monotonic()
            return
        took = (time.monotonic() - gc_started[0]) * 1000
        if took > 10:
            events.append(f"{time.time():.2f} gc generation {info['generation']} took "
                          f"{took:.0f} ms, collected {info['collected']}")

    gc.callbacks.append(gc_timer)
    from server.cli import main as relay_main

    try:
        return relay_main()
    finally:
        done.set()
        with out.open("w") as f:
            longest = max(stalls, default=0.0) * 1000
            f.write(f"stalls over {STALL_MS:g} ms: {len(stalls)}, longest {longest:.0f} ms, "
                    f"samples {sum(samples.values())}\n\n")
            f.write("\n".join(events) + "\n\n")
            for stack, n in samples.most_common(25):
                f.write(f"--- {n} samples\n{stack}\n")


if __name__ == "__main__":
    sys.exit(main())
