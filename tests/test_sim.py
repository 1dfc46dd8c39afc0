"""The deterministic simulation of the whole network (issue 16), run as people run it
(``python -m sim``, a process of its own, hash salt fixed):

- 100,000 steps and more over several seeds, with every fault of the seeds' mixes, and
  no violation; together the seeds reach every status, fault and protocol path the
  simulator knows (so it cannot pass by doing nothing);
- one seed replays the same run, step by step;
- each bug planted in the shipped code (``tests/sim_plants.py``) is found within a few
  seeds, and shrinking keeps it failing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CI_SEEDS = 25
CI_STEPS = 4_000
"""Steps of faults per seed in CI: 25 seeds × 4,000 = 100,000, settling on top."""
PLANT_SEEDS = 30
PLANT_STEPS = 2_000


def sim(*args: object, module: str = "sim",
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m sim ARGS`` (or the planted-bug runner) in its own process."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def last_line(out: str) -> dict[str, float]:
    """The figures of the last line: ``steps=… seeds=… violations=… …``."""
    line = out.strip().splitlines()[-1]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


REQUIRED = {
    # statuses
    "status:final", "status:valid", "status:accepted", "status:disputed:disputed",
    "status:lost:lost", "status:invalid:overspend", "status:pending:prev",
    # faults
    "fault:dropped", "fault:duplicated", "fault:reordered", "fault:delayed", "fault:cut",
    "crash:RelayNode", "crash:WalletNode", "restart:checked", "partition", "clone",
    "overspend", "tamper:delete_set", "tamper:bad_signature", "tamper:oversized",
    "tamper:flip", "tamper:replay", "revoke_race", "witness:voted_a_losing_side",
    "pay:till",
    # protocol paths
    "want:cursor", "want:state_vector", "entries:bulk", "reconcile:buckets",
    "close:refused", "close:too_big", "close:protocol", "close:rate_limited",
}
"""What the CI seeds together must reach."""


def test_100k_steps_of_faults_break_no_promise_and_reach_every_path() -> None:
    p = sim("--seed", 1, "--seeds", CI_SEEDS, "--steps", CI_STEPS, "--coverage")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    figures = last_line(p.stdout)
    assert figures["violations"] == 0 and figures["seeds"] == CI_SEEDS
    assert figures["steps"] >= CI_SEEDS * CI_STEPS
    assert figures["faults"] > 0
    reached: set[str] = set()
    for line in p.stdout.splitlines():
        if line.startswith("  reached: "):
            reached.update(item.split("=")[0] for item in line[11:].split(", "))
    assert reached >= REQUIRED, f"never reached: {sorted(REQUIRED - reached)}"


def test_one_seed_replays_the_same_run() -> None:
    runs = [sim("--seed", 3, "--steps", 1500, "--trace") for _ in range(2)]
    for p in runs:
        assert p.returncode == 0, p.stderr[-2000:]
    traces = [p.stdout.strip().splitlines()[:-1] for p in runs]  # (the last line: speed)
    assert len(traces[0]) > 50 and traces[0] == traces[1]  # (its actions, then its result)


@pytest.mark.parametrize("plant, found", [
    ("gate_delete_set", "acknowledged a tampered message it had to refuse"),
    ("witness_forgets", "after a restart its claims reach"),
    # (acknowledged entries lost in a crash; or never sent again, so the world never
    # agrees: the peer believes the relay holds them)
    ("ack_before_commit", "acknowledged|not live"),
    ("fork_side_ignored", "at a fork is valid, not conflicted"),
])
def test_the_simulator_finds_each_planted_bug(plant: str, found: str) -> None:
    p = sim(plant, "--seed", 1, "--seeds", PLANT_SEEDS, "--steps", PLANT_STEPS, "--stop",
            module="tests.sim_plants")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    [violation] = [line for line in p.stdout.splitlines() if "VIOLATION" in line]
    assert re.search(found, violation), violation
    assert f"python -m tests.sim_plants {plant} --seed" in p.stdout  # how to replay it


def test_shrinking_keeps_a_planted_bug_failing_with_less() -> None:
    p = sim("fork_side_ignored", "--seed", 1, "--steps", PLANT_STEPS, "--stop", "--shrink",
            module="tests.sim_plants")
    assert p.returncode == 1
    assert "shrunk: " in p.stdout and "at a fork is valid" in p.stdout.split("shrunk: ")[1]
    replay = [line for line in p.stdout.splitlines() if "replay:" in line][-1]
    assert "--calm " in replay, "something was turned off and it still fails"


def test_bad_options_say_what_to_give() -> None:
    p = sim("--calm", "earthquake")
    assert p.returncode == 2 and "--calm earthquake: give some of drop" in p.stderr
