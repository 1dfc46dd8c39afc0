"""An embedded live demo: a whole little network on this machine, with nothing to set up.

``tally demo`` (in a terminal) makes, in a scratch directory: a network with one
witness, a ``tally-relay`` holding the witness key on a loopback port, a mint, and two
payers, alice and bob, each funded with 100.00 EUR made final by the witness. It opens
the app on alice's wallet, syncing with the relay; meanwhile bob pays alice a little
now and then (as another person would), so payments arrive and turn final on screen.
When the app quits, the relay and bob stop and the directory is removed (``--dir``
keeps it).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from nacl.signing import SigningKey

from wallet import keys as keyfiles
from wallet.address import parse_address
from wallet.encoding import Genesis, Policy
from wallet.wallet import Wallet

PASSPHRASE = "demo passphrase"  # throwaway wallets in a scratch directory
FUNDS_MINOR = 10_000  # what the mint issues each payer: 100.00 EUR
BOB_PAYS_EVERY_S = 20.0  # how often bob pays alice while the demo runs
BOB_PAYS_MINOR = 150  # 1.50 EUR each time
RELAY_START_S = 30.0  # how long the relay may take to listen


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env[keyfiles.PASSPHRASE_ENV] = PASSPHRASE
    env.pop(keyfiles.PASSPHRASE_FILE_ENV, None)
    return env


def _tally(home: Path, *args: str) -> str:
    """Run a ``tally`` command on a demo wallet; its output (raises on failure)."""
    p = subprocess.run([sys.executable, "-m", "tui.cli", *args, "--home", str(home)],
                       env=_env(), capture_output=True, text=True, timeout=120, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"tally {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


class LiveDemo:
    """The demo's network, relay and wallets; ``stop`` ends them."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.alice = workdir / "alice"
        self.bob = workdir / "bob"
        self.mint = workdir / "mint"
        self.relay: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._stop = threading.Event()
        self._bob: threading.Thread | None = None

    def start(self, say: Callable[[str], None] = print) -> None:
        """Make the network, start the relay, fund the payers."""
        limits = keyfiles.FAST_INSECURE
        witness, issuer = SigningKey.generate(), SigningKey.generate()
        genesis = Genesis("demo", "EUR", 2, bytes(issuer.verify_key),
                          (bytes(witness.verify_key),), 1,
                          Policy(5000, 10000, 100000, 86400)).signed(issuer)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "demo.genesis").write_bytes(genesis.raw)
        keyfiles.save_key(self.dir / "witness.key", witness, PASSPHRASE, kind="witness",
                          limits=limits)
        say("starting a relay with the network's witness on a loopback port…")
        self._start_relay()
        Wallet.create_network(self.mint, genesis, issuer, PASSPHRASE, limits=limits).close()
        for home, label in ((self.alice, "alice-phone"), (self.bob, "bob-laptop")):
            w = Wallet.join(home, genesis.raw)
            try:
                w.init(PASSPHRASE, label=label, limits=limits)
            finally:
                w.close()
            _tally(home, "relays", "add", self.url)
        say("the mint issues 100.00 EUR to alice and to bob; the witness makes it final…")
        m = Wallet.open(self.mint)
        try:
            for home in (self.alice, self.bob):
                to = parse_address(_tally(home, "address").strip())
                m.pay(to, FUNDS_MINOR, PASSPHRASE)
        finally:
            m.close()
        _tally(self.mint, "sync", "--relay", self.url, "--once")
        _tally(self.bob, "sync", "--once")
        self._bob = threading.Thread(target=self._bob_pays, name="demo-bob", daemon=True)
        self._bob.start()

    def _start_relay(self) -> None:
        log = self.dir / "relay.log"
        self.relay = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "--db", str(self.dir / "relay.db"),
             "--listen", "127.0.0.1:0", "--network", str(self.dir / "demo.genesis"),
             "--witness-key", str(self.dir / "witness.key"), "--log-file", str(log)],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + RELAY_START_S
        while time.monotonic() < deadline:
            if self.relay.poll() is not None:
                raise RuntimeError(f"the demo relay exited ({self.relay.returncode}); "
                                   f"see {log}")
            if log.exists():
                for line in log.read_text().splitlines():
                    doc = json.loads(line) if line.startswith("{") else {}
                    if doc.get("event") == "listening":
                        self.url = f"ws://127.0.0.1:{doc['port']}"
                        return
            time.sleep(0.05)
        raise RuntimeError(f"the demo relay did not start listening; see {log}")

    def _bob_pays(self) -> None:
        """Bob pays alice now and then, as another person would."""
        alice = _tally(self.alice, "address").strip()
        while not self._stop.wait(BOB_PAYS_EVERY_S):
            try:
                _tally(self.bob, "pay", alice, f"{BOB_PAYS_MINOR / 100:.2f}", "--yes",
                       "--memo", "from bob")
                _tally(self.bob, "sync", "--once")
            except (RuntimeError, subprocess.TimeoutExpired):
                continue  # a busy moment: bob tries again next time

    def stop(self) -> None:
        """Stop bob and the relay."""
        self._stop.set()
        if self._bob is not None:
            self._bob.join(5)
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.relay.wait(10)
            if self.relay.poll() is None:
                self.relay.kill()


def run_live_demo(workdir: Path | None = None) -> None:
    """Start the demo, open the app on alice's wallet, and clean up when it quits."""
    from tui.app import TallyApp
    from tui.service import WalletService

    tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="tally-demo-")
    demo = LiveDemo(Path(tmp.name) if tmp else workdir)  # type: ignore[arg-type]
    try:
        demo.start()
        os.environ[keyfiles.PASSPHRASE_ENV] = PASSPHRASE  # the app unlocks without asking
        service = WalletService.open(demo.alice)
        try:
            TallyApp(service).run()
        finally:
            service.close()
    finally:
        demo.stop()
        if tmp is not None:
            tmp.cleanup()
