"""Ledger-state benchmark (issue 13): every command's wall time and peak RSS on a big wallet.

    python bench/state.py

Builds (once, cached) the 100,000-block wallet of ``bench/ingest.py`` (200,000 entries
with votes), copies it to a scratch home under ``bench/out/``, and runs each command
of the issue in a fresh ``tally`` process, timing its wall clock and reading its peak
resident memory from the kernel (``wait4``). It prints one line per command and, last,
``cmd_max_s=… cmd_rss_mb_max=… cmd_max_s_1m=… relay_start_s_1m=… relay_rss_mb_1m=…``.

Not measured yet (printed as ``na``): ``pay`` and ``move`` (the wallet ``bench/ingest.py``
restores has a device of its own with no final money to spend), ``sync --once`` against
a relay holding the same set, and the 1,000,000-entry figures (commands and a restarted
relay); see the issue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
BLOCKS = 100_000
PASSPHRASE = "bench passphrase"  # the throwaway wallet bench/ingest.py makes


def log(msg: str) -> None:
    """Progress, on stderr."""
    print(msg, file=sys.stderr, flush=True)


def tally(home: Path, *args: str) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``tally ARGS --home HOME`` in a fresh process: (wall s, peak RSS MB, result)."""
    exe = Path(sys.executable).with_name("tally")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "wallet.cli"]
    # as installed: bytecode cached (PYTHONDONTWRITEBYTECODE would compile every module
    # on every start), no invariant checks
    env = {k: v for k, v in os.environ.items()
           if k not in ("TALLY_HOME", "TALLY_CHECK", "PYTHONDONTWRITEBYTECODE")}
    env["TALLY_PASSPHRASE"] = PASSPHRASE
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*cmd, *args, "--home", str(home)], env=env, text=True,
                                stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    if done.returncode != 0:
        raise SystemExit(f"tally {' '.join(args)} failed: {done.stderr.strip()}")
    return wall, usage.ru_maxrss / 1024, done  # ru_maxrss is in KiB on Linux


def build_wallet() -> Path:
    """The ingest benchmark's 100,000-block wallet (made by it when missing)."""
    home = OUT / f"wallet-{BLOCKS}"
    if not (home / "wallet.db").exists() or _entries(home) < 2 * BLOCKS:
        log(f"building {home} with bench/ingest.py …")
        subprocess.run([sys.executable, str(HERE / "ingest.py"), "--blocks", str(BLOCKS)],
                       check=True, cwd=ROOT)
    return home


def _entries(home: Path) -> int:
    import sqlite3

    try:
        conn = sqlite3.connect(str(home / "wallet.db"))
        return conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    except sqlite3.Error:
        return 0


def main() -> int:
    """Run the commands; print their figures and the summary line."""
    src = build_wallet()
    home = OUT / f"state-{BLOCKS}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(src, home)
    tally(home, "balance", "--json")  # a store of an older schema is rebuilt here, once
    devices = json.loads(tally(home, "devices", "list", "--json")[2].stdout)["devices"]
    sibling = next(d for d in devices if not d.get("this"))["device"]
    bundle = OUT / "state-export.bundle"
    commands: list[tuple[str, ...]] = [
        ("balance",),
        ("history",),
        ("history", "--status", "pending"),
        ("history", "--status", "final"),
        ("devices", "list"),
        ("frauds",),
        ("request", "0.01", "--memo", "bench"),
        ("receive",),
        ("bundle", "export", "--for", sibling, str(bundle)),
    ]
    worst_s = worst_mb = 0.0
    for args in commands:
        wall, rss, _ = tally(home, *args, "--json")
        worst_s, worst_mb = max(worst_s, wall), max(worst_mb, rss)
        print(f"{' '.join(args[:3]):40s} {wall:6.3f} s  {rss:6.1f} MB", flush=True)
    print(f"cmd_max_s={worst_s:.3f} cmd_rss_mb_max={worst_mb:.1f} cmd_max_s_1m=na "
          "relay_start_s_1m=na relay_rss_mb_1m=na", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
