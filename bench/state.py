"""Ledger-state benchmark (issue 13): every command's wall time and peak RSS on a big
wallet, and a relay restarted on a big network.

    python bench/state.py [--skip-1m]

Builds (once, cached) the 100,000-block wallet of ``bench/ingest.py`` (200,000 entries
with votes), copies it to a scratch home under ``bench/out/``, funds its device (an
issue signed with the bench network's mint key, and the witness's votes), and runs
each command of the issue in a fresh ``tally`` process, timing its wall clock and
reading its peak resident memory from the kernel (its ``VmHWM`` at exit): ``pay``, ``receive``,
``move``, ``balance``, ``history`` (with and without ``--status``), ``devices list``,
``frauds``, ``request``, ``bundle export --for`` and ``sync --once`` against a relay
holding the same set. ``bundle export --for`` is timed on a wallet that has exported
before: the first export of a wallet makes the sections it keeps ready afterwards
(``wallet.export_cache``); that one is timed too and printed as ``export_first_s``;
the timed one writes a new file (replacing the first export's would time the file
system freeing the old one).
The packages are byte-compiled first, as an installed ``tally`` is (this machine sets
``PYTHONDONTWRITEBYTECODE``, which would otherwise make every process compile its
modules again). Then the same on the 500,000-block wallet (1,000,000 entries),
and a ``tally-relay`` restarted on a database of 200,000 and of 1,000,000 entries: the
seconds from its start until it serves a new device (the first window of its cold
catch-up), and its peak resident memory once that device has drained the whole
catch-up. The last line is
``cmd_max_s=… cmd_rss_mb_max=… cmd_max_s_1m=… export_first_s=… relay_start_s_1m=…
relay_rss_mb_1m=… relay_rss_mb_per_m=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

OUT = HERE / "out"
BLOCKS = 100_000
PACKAGES = ("wallet", "sync", "server", "tui")
"""Byte-compiled before timing, as an installed tally is."""
BLOCKS_1M = 500_000  # with one vote each: 1,000,000 entries
PASSPHRASE = "bench passphrase"  # the throwaway wallet bench/ingest.py makes
FUNDS_MINOR = 1_000_000  # what the mint issues to the bench device: 10,000.00
SEED = 1  # bench/ingest.py's default generator seed


def log(msg: str) -> None:
    """Progress, on stderr."""
    print(msg, file=sys.stderr, flush=True)


# ``tally`` as its console script runs it, and at exit its peak resident memory as the
# kernel counts it for this process image (``VmHWM``): the rusage of a child counts the
# memory of the parent it was forked from too.
_TALLY_WITH_PEAK = """
import atexit, os, sys
def _peak():
    with open(os.environ["BENCH_PEAK_FILE"], "w") as f:
        f.write(open("/proc/self/status").read())
atexit.register(_peak)
from tui.cli import main
sys.argv[0] = "tally"
sys.exit(main())
"""


def tally(home: Path, *args: str) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``tally ARGS --home HOME`` in a fresh process: (wall s, peak RSS MB, result)."""
    # as installed: bytecode cached (PYTHONDONTWRITEBYTECODE would compile every module
    # on every start), no invariant checks
    env = {k: v for k, v in os.environ.items()
           if k not in ("TALLY_HOME", "TALLY_CHECK", "PYTHONDONTWRITEBYTECODE")}
    env["TALLY_PASSPHRASE"] = PASSPHRASE
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "status"
        env["BENCH_PEAK_FILE"] = str(peak_file)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _TALLY_WITH_PEAK, *args, "--home",
                               str(home)], env=env, text=True, capture_output=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"tally {' '.join(args)} failed: {done.stderr.strip()}")
        fields = dict(line.split(":", 1) for line in peak_file.read_text().splitlines())
    return wall, int(fields["VmHWM"].split()[0]) / 1024, done


def build_wallet(blocks: int) -> Path:
    """The ingest benchmark's wallet of ``blocks`` blocks (made by it when missing)."""
    home = OUT / f"wallet-{blocks}"
    if not (home / "wallet.db").exists() or _entries(home) < 2 * blocks:
        log(f"building {home} with bench/ingest.py …")
        subprocess.run([sys.executable, str(HERE / "ingest.py"), "--blocks", str(blocks)],
                       check=True, cwd=ROOT)
    return home


def _entries(home: Path) -> int:
    import sqlite3

    try:
        conn = sqlite3.connect(str(home / "wallet.db"))
        return conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    except sqlite3.Error:
        return 0


# --------------------------------------------------------------------------- funding
def _import(home: Path, bodies: list[bytes], network: bytes, name: str) -> None:
    from wallet.bundle import write_bundle

    path = OUT / f"state-{name}.bundle"
    write_bundle(path, network, bodies)
    tally(home, "bundle", "import", str(path), "--json")


def fund(home: Path) -> None:
    """The mint issues ``FUNDS_MINOR`` to this wallet's device, and the witness votes
    it final (both keys are the generator's, from its seed)."""
    from ingest import bench_keys

    from wallet.encoding import Block, Kind, Vote, entry_hash
    from wallet.wallet import Wallet

    _, (_, witness, mint) = bench_keys(SEED)
    w = Wallet.open(home)
    try:
        led, net = w.ledger, w.network
        mint_pk = bytes(mint.verify_key)
        head = led.head(mint_pk)
        assert head is not None and w.device is not None and w.account is not None
        issue = Block(Kind.ISSUE, net, mint_pk, head.seq + 1, head.id, to_account=w.account,
                      to_device=w.device, amount=FUNDS_MINOR)
        body = issue.body()
        raw = body + mint.sign(body).signature
        vote = Vote(net, mint_pk, issue.seq, entry_hash(raw), bytes(witness.verify_key)).body()
        bodies = [raw, vote + witness.sign(vote).signature]
    finally:
        w.close()
    _import(home, bodies, net, "fund")


def vote_own_chain(home: Path) -> None:
    """The witness votes this device's chain (its open and the receive of the funds)."""
    from ingest import bench_keys

    from wallet.encoding import Vote
    from wallet.wallet import Wallet

    _, (_, witness, _) = bench_keys(SEED)
    w = Wallet.open(home)
    try:
        assert w.device is not None
        top = w.ledger.head(w.device)
        assert top is not None, "the bench device has no valid block"
        vote = Vote(w.network, w.device, top.seq, top.id, bytes(witness.verify_key)).body()
        bodies, net = [vote + witness.sign(vote).signature], w.network
    finally:
        w.close()
    _import(home, bodies, net, "votes")


def payee(home: Path) -> str:
    """The address of a device of another account (the first one opened)."""
    from wallet.address import Address
    from wallet.wallet import Wallet

    w = Wallet.open(home)
    try:
        for key, account, _ in w.ledger.opened_devices():
            if account != w.account and account != w.genesis.issuer:
                return Address.of(w.network, account, key).text()
    finally:
        w.close()
    raise SystemExit("no other account's device in the bench network")


# --------------------------------------------------------------------------- the relay
class RelayProcess:
    """A ``tally-relay`` subprocess on a database, its port read from its log."""

    def __init__(self, db: Path, genesis: Path, work: Path) -> None:
        exe = Path(sys.executable).with_name("tally-relay")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]
        env = {k: v for k, v in os.environ.items() if k != "TALLY_CHECK"}
        env["TALLY_PASSPHRASE"] = PASSPHRASE
        self.log = work / f"relay-{time.monotonic_ns()}.log"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [*cmd, "--db", str(db), "--listen", "127.0.0.1:0", "--network", str(genesis),
             "--log-file", str(self.log)], env=env, cwd=work,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def port(self, timeout_s: float = 120) -> int:
        """The port it listens on (waiting for its ``listening`` event)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"tally-relay exited {self.proc.returncode}: "
                                 f"{self.log.read_text() if self.log.exists() else ''}")
            if self.log.exists():
                for line in self.log.read_text().splitlines():
                    doc = json.loads(line) if line.startswith("{") else {}
                    if doc.get("event") == "listening":
                        return int(doc["port"])
            time.sleep(0.01)
        raise SystemExit("tally-relay did not start listening")

    def rss_mb(self) -> tuple[float, float]:
        """(resident, peak resident) MB, from the kernel."""
        fields = dict(line.split(":", 1) for line in
                      Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)

    def stop(self) -> None:
        """SIGTERM, and wait."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


async def first_served(url: str, genesis_raw: bytes) -> tuple[float, int]:
    """A new device connects: (the moment its first catch-up window arrived, bytes of
    the whole catch-up it then drains unparsed)."""
    from nacl.signing import SigningKey
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake

    from sync.messages import ROLE_DEVICE, Entries, decode
    from sync.port import MemoryPort
    from sync.protocol import Connection
    from wallet.encoding import parse_genesis
    from wallet.ledger import Ledger

    port = MemoryPort(Ledger(parse_genesis(genesis_raw)))
    conn = Connection(client=True, key=SigningKey.generate(), role=ROLE_DEVICE, port=port)
    while True:
        try:
            ws = await connect(url, max_size=None, compression=None)
            break
        except (OSError, InvalidHandshake):
            await asyncio.sleep(0.01)
    async with ws:
        conn.initiate()
        for m in conn.data_to_send():
            await ws.send(m)
        first = 0.0
        got = 0
        while True:
            data = await ws.recv()
            assert isinstance(data, bytes)
            if data[0] == 4:  # Entries: drained, not stored (this measures the relay)
                if not first:
                    first = time.perf_counter()
                got += len(data)
                msg = decode(data, max_bytes=len(data), max_entries=1 << 20)
                if isinstance(msg, Entries) and msg.last:
                    return first, got
                continue
            conn.receive_data(data)
            for m in conn.data_to_send():
                await ws.send(m)


def relay_start(n_entries: int) -> tuple[float, float, float]:
    """A relay restarted on ``n_entries``: (seconds to serve a new device, resident MB
    then, peak resident MB after that device drained the whole cold catch-up)."""
    from relay import cold_db

    genesis_raw, _, db = cold_db(n_entries)
    work = OUT / f"relay-start-{n_entries}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    genesis = work / "bench.genesis"
    genesis.write_bytes(genesis_raw)
    warm = RelayProcess(db, genesis, work)  # makes its node key; the disk cache warms
    warm.port()
    warm.stop()
    relay = RelayProcess(db, genesis, work)
    port = relay.port()
    served_at, drained = asyncio.run(first_served(f"ws://127.0.0.1:{port}", genesis_raw))
    start_s = served_at - relay.started
    rss, peak = relay.rss_mb()
    relay.stop()
    log(f"relay on {n_entries} entries: served a new device {start_s:.2f} s after start; "
        f"RSS {rss:.0f} MB, peak {peak:.0f} MB after a {drained / 1e6:.0f} MB cold catch-up")
    return start_s, rss, peak


def relay_for(home: Path, n_blocks: int) -> tuple[RelayProcess, str]:
    """A relay on a scratch copy of the database holding the wallet's network."""
    from relay import cold_db, copy_relay_db

    genesis_raw, _, db = cold_db(2 * n_blocks)
    work = OUT / f"state-relay-{n_blocks}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy = copy_relay_db(db, work / "relay.db")
    genesis = work / "bench.genesis"
    genesis.write_bytes(genesis_raw)
    relay = RelayProcess(copy, genesis, work)
    return relay, f"ws://127.0.0.1:{relay.port()}"


# --------------------------------------------------------------------------- commands
def run_commands(blocks: int) -> tuple[float, float, float]:
    """Every command on a scratch copy of the ``blocks``-block wallet: (worst s, MB,
    s of the wallet's first bundle export)."""
    src = build_wallet(blocks)
    home = OUT / f"state-{blocks}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(src, home)
    tally(home, "balance", "--json")  # a store of an older schema is rebuilt here, once
    fund(home)
    devices = json.loads(tally(home, "devices", "list", "--json")[2].stdout)["devices"]
    sibling = next(d for d in devices if not d.get("this"))["device"]
    to = payee(home)
    bundle = OUT / "state-export.bundle"
    relay, url = relay_for(home, blocks)
    worst_s = worst_mb = 0.0

    def timed(*args: str) -> None:
        nonlocal worst_s, worst_mb
        wall, rss, _ = tally(home, *args, "--json")
        worst_s, worst_mb = max(worst_s, wall), max(worst_mb, rss)
        shown = " ".join(a if len(a) < 24 else a[:12] + "…" for a in args[:3])
        print(f"[{blocks}] {shown:40s} {wall:6.3f} s  {rss:6.1f} MB", flush=True)

    first_export = 0.0
    try:
        first_export = tally(home, "bundle", "export", "--for", sibling, str(bundle),
                             "--json")[0]
        print(f"[{blocks}] first bundle export (makes the sections) {first_export:6.3f} s",
              flush=True)
        bundle.unlink()  # (replacing a big file would time the unlinking of the old one)
        timed("receive")  # claims the funds
        vote_own_chain(home)
        timed("pay", to, "0.01", "--yes")
        timed("move", "0.01", "--to", sibling)
        for args in [("balance",), ("history",), ("history", "--status", "pending"),
                     ("history", "--status", "final"), ("devices", "list"), ("frauds",),
                     ("request", "0.01", "--memo", "bench"),
                     ("bundle", "export", "--for", sibling, str(bundle))]:
            timed(*args)
        tally(home, "sync", "--once", "--relay", url, "--json")  # the relay gets ours
        timed("sync", "--once", "--relay", url)  # and now nothing is new
    finally:
        relay.stop()
    return worst_s, worst_mb, first_export


def main(argv: list[str] | None = None) -> int:
    """Run the commands and the relay restarts; print the figures and the summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skip-1m", action="store_true",
                   help="only the 100,000-block wallet (no 1,000,000-entry figures)")
    a = p.parse_args(argv)
    subprocess.run([sys.executable, "-m", "compileall", "-q", *PACKAGES], cwd=ROOT, check=True)
    worst_s, worst_mb, first_export = run_commands(BLOCKS)
    s_1m = start_1m = rss_1m = per_m = "na"
    if not a.skip_1m:
        s_1m = f"{run_commands(BLOCKS_1M)[0]:.3f}"
        _, _, peak_small = relay_start(2 * BLOCKS)
        start, _, peak = relay_start(2 * BLOCKS_1M)
        start_1m, rss_1m = f"{start:.2f}", f"{peak:.0f}"
        per_m = f"{(peak - peak_small) / ((2 * BLOCKS_1M - 2 * BLOCKS) / 1e6):.0f}"
    print(f"cmd_max_s={worst_s:.3f} cmd_rss_mb_max={worst_mb:.1f} cmd_max_s_1m={s_1m} "
          f"export_first_s={first_export:.2f} "
          f"relay_start_s_1m={start_1m} relay_rss_mb_1m={rss_1m} relay_rss_mb_per_m={per_m}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
