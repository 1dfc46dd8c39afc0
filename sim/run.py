"""Running seeds: one world per seed in a scratch folder, its report, and the line that
replays it.

    python -m sim [--seed S] [--seeds N] [--steps N] [--trace]

Each seed builds its world (``sim.world``), runs ``--steps`` steps of faults, then
heals and waits for the world to settle. A seed that breaks a promise prints its
violation and the command that replays it with a trace; the last line is
``steps=… seeds=… violations=… faults=… steps_per_s=…``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sim.world import Report, Violation, World, ledger_checks, seeded

STEPS_DEFAULT = 2_000
SCRATCH_DIRS = ("/dev/shm",)
"""Where worlds are built when the machine has it: memory, so a commit's fsync is free
(a simulated crash is a process's, which loses nothing committed, fsync or not)."""


def scratch_root() -> Path:
    """A new scratch folder, in memory where there is one."""
    for d in SCRATCH_DIRS:
        if Path(d).is_dir():
            try:
                return Path(tempfile.mkdtemp(prefix="tally-sim-", dir=d))
            except OSError:
                continue
    return Path(tempfile.mkdtemp(prefix="tally-sim-"))


def replay_command(seed: int, steps: int) -> str:
    """The command that replays one seed, step by step, with its trace."""
    return f"./dev sim --seed {seed} --steps {steps} --trace"


def run_seed(seed: int, steps: int, *, trace: Callable[[str], None] | None = None,
             keep: bool = False) -> Report:
    """One seed's world, run to the end or to its first violation."""
    root = scratch_root()
    try:
        with seeded(seed), ledger_checks():
            world = World(seed, root, trace=trace)
            world.build()
            try:
                world.loop.run_until_complete(world.run(steps))
            except Violation:
                pass
            finally:
                _stop(world)
            report = world.report
            for how, n in world.net.tampered.items():
                report.count(f"tamper:{how}", n)
            report.faults = (world.net.stats.dropped + world.net.stats.duplicated
                             + world.net.stats.reordered + world.net.stats.delayed
                             + world.net.stats.cut + report.crashes + report.partitions)
            return report
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _stop(world: World) -> None:
    """Stop every node and close the loop (a world is not reused)."""
    for node in world.nodes():
        if node.up:
            node.crash()
    loop = world.loop
    pending = [t for t in asyncio_all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        import asyncio

        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


def asyncio_all_tasks(loop: object) -> list:
    """Every task of a loop that is not running."""
    import asyncio

    return list(asyncio.all_tasks(loop))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Run seeds; print one line each, then the totals."""
    ap = argparse.ArgumentParser(prog="sim", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None, help="the first seed (default 1)")
    ap.add_argument("--seeds", type=int, default=1, help="how many seeds, from --seed")
    ap.add_argument("--steps", type=int, default=STEPS_DEFAULT,
                    help="steps of faults per seed, before the world heals")
    ap.add_argument("--trace", action="store_true", help="print every action as it happens")
    ap.add_argument("--stop", action="store_true", help="stop at the first violation")
    ap.add_argument("--coverage", action="store_true",
                    help="print what each seed reached (statuses, faults, protocol paths)")
    a = ap.parse_args(argv)
    first = 1 if a.seed is None else a.seed
    trace = (lambda line: print(line, flush=True)) if a.trace else None
    total_steps = violations = faults = 0
    seeds_run = a.seeds
    t0 = time.perf_counter()
    for seed in range(first, first + a.seeds):
        r = run_seed(seed, a.steps, trace=trace)
        total_steps += r.steps
        faults += r.faults
        if r.violation:
            violations += 1
            print(f"seed {seed}: VIOLATION {r.violation}\n  replay: "
                  f"{replay_command(seed, a.steps)}", flush=True)
            if a.stop:
                seeds_run = seed - first + 1
                break
        else:
            print(f"seed {seed}: ok, {r.steps} steps ({r.settle_steps} settling), "
                  f"{r.payments} payments, {r.faults} faults, {r.simulated_s:.0f} s "
                  "simulated", flush=True)
        if a.coverage:
            print("  reached: " + ", ".join(f"{k}={v}" for k, v in sorted(r.coverage.items())),
                  flush=True)
    wall = time.perf_counter() - t0
    print(f"steps={total_steps} seeds={seeds_run} violations={violations} faults={faults} "
          f"steps_per_s={total_steps / wall:.0f}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
