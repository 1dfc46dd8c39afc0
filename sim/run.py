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
from collections.abc import Callable, Iterable
from pathlib import Path

from sim.loop import StalledError
from sim.world import (
    CALM_KNOBS,
    Report,
    Shape,
    Violation,
    World,
    ledger_checks,
    seeded,
    wall_clock,
)

STEPS_DEFAULT = 2_000
STOP_S = 60.0
"""Simulated seconds the world's tasks get to end once cancelled, at the end of a run."""
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


def replay_command(seed: int, steps: int, calm: Iterable[str] = ()) -> str:
    """The command that replays one seed, step by step, with its trace."""
    knobs = f" --calm {','.join(calm)}" if calm else ""
    return f"./dev sim --seed {seed} --steps {steps}{knobs} --trace"


def run_seed(seed: int, steps: int, *, trace: Callable[[str], None] | None = None,
             keep: bool = False, calm: Iterable[str] = ()) -> Report:
    """One seed's world, run to the end or to its first violation."""
    root = scratch_root()
    try:
        with seeded(seed), ledger_checks():
            world = World(seed, root, trace=trace, calm=calm)
            clock = wall_clock(world.loop)
            clock.__enter__()
            world.build()
            try:
                world.loop.run_until_complete(world.run(steps))
                note_coverage(world)
            except Violation:
                pass
            except StalledError as exc:
                world.report.violation = f"step {world.report.steps}: {exc}"
            finally:
                _stop(world)
                clock.__exit__(None, None, None)
            report = world.report
            report.faults = (world.net.stats.dropped + world.net.stats.duplicated
                             + world.net.stats.reordered + world.net.stats.delayed
                             + world.net.stats.cut + report.crashes + report.partitions)
            return report
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


SHRINK_STEPS_MIN = 50


def shrink(seed: int, steps: int, calm: Iterable[str] = (),
           say: Callable[[str], None] = print) -> tuple[int, list[str], str]:
    """A shorter, calmer run of a failing seed that still fails: fewer steps of faults
    (halved while it fails), then each fault, crash, partition, hostile node or clone
    turned off while it still fails. The steps, the knobs turned off, the violation."""
    import random

    kept = list(calm)
    last = run_seed(seed, steps, calm=kept).violation
    assert last is not None, "shrink a run that fails"
    while steps // 2 >= SHRINK_STEPS_MIN:
        r = run_seed(seed, steps // 2, calm=kept)
        if r.violation is None:
            break
        steps, last = steps // 2, r.violation
        say(f"  still fails with --steps {steps}")
    active = Shape.draw(random.Random(seed)).calmed(kept).active()
    for knob in active:
        r = run_seed(seed, steps, calm=[*kept, knob])
        if r.violation is not None:
            kept.append(knob)
            last = r.violation
            say(f"  still fails without {knob}")
    return steps, kept, last


def note_coverage(world: World) -> None:
    """Add to the report what the network did and the statuses the run reached (read
    from every replica still up, before the world stops)."""
    r, stats = world.report, world.net.stats
    for how, n in world.net.tampered.items():
        r.count(f"tamper:{how}", n)
    for fault in ("dropped", "duplicated", "reordered", "delayed", "cut"):
        if getattr(stats, fault):
            r.count(f"fault:{fault}", getattr(stats, fault))
    world.sample_statuses()


def _stop(world: World) -> None:
    """Stop every node and close the loop (a world is not reused)."""
    for node in world.nodes():
        if node.up:
            node.crash()
    import asyncio

    loop = world.loop
    pending = [t for t in asyncio_all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        try:
            _, stuck = loop.run_until_complete(asyncio.wait(pending, timeout=STOP_S))
        except StalledError:
            stuck = {t for t in pending if not t.done()}
        if stuck and world.report.violation is None:
            names = sorted(t.get_coro().__qualname__ for t in stuck)  # type: ignore[union-attr]
            world.report.violation = (f"step {world.report.steps}: {len(stuck)} tasks ignored "
                                      f"their cancellation ({', '.join(names[:3])})")
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
    ap.add_argument("--calm", default="", metavar="KNOBS",
                    help=f"turn off, comma-separated: {', '.join(CALM_KNOBS)}")
    ap.add_argument("--shrink", action="store_true",
                    help="shrink a failing seed to a shorter, calmer run that still fails")
    ap.add_argument("--coverage", action="store_true",
                    help="print what each seed reached (statuses, faults, protocol paths)")
    a = ap.parse_args(argv)
    first = 1 if a.seed is None else a.seed
    trace = (lambda line: print(line, flush=True)) if a.trace else None
    total_steps = violations = faults = 0
    seeds_run = a.seeds
    t0 = time.perf_counter()
    calm = [k.strip() for k in a.calm.split(",") if k.strip()]
    unknown = sorted(set(calm) - set(CALM_KNOBS))
    if unknown:
        ap.error(f"--calm {','.join(unknown)}: give some of {', '.join(CALM_KNOBS)}")
    for seed in range(first, first + a.seeds):
        r = run_seed(seed, a.steps, trace=trace, calm=calm)
        total_steps += r.steps
        faults += r.faults
        if r.violation:
            violations += 1
            print(f"seed {seed}: VIOLATION {r.violation}\n  replay: "
                  f"{replay_command(seed, a.steps, calm)}", flush=True)
            if a.shrink:
                steps, knobs, why = shrink(seed, a.steps, calm,
                                           say=lambda line: print(line, flush=True))
                print(f"  shrunk: {why}\n  replay: {replay_command(seed, steps, knobs)}",
                      flush=True)
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
