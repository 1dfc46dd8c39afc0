"""An embedded live demo: a whole little network on this machine, with nothing to set up.

``tally demo`` (in a terminal) makes, in a scratch directory: a network with one
witness, a ``tally-relay`` holding the witness key on a loopback port, a mint, and two
accounts, alice (the person at the keyboard) and a coffee shop, each funded with
100.00 EUR made final by the witness. It opens the app on alice's wallet, syncing with
the relay. The coffee shop's device answers each payment request alice makes in the
app (it pays it a few seconds later) and pays her back a little now and then, so
payments arrive and turn final on screen; paying the shop's address works too. When
the app quits, the relay and the shop stop and the directory is removed (``--dir``
keeps it).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nacl.signing import SigningKey

from wallet import keys as keyfiles
from wallet.address import parse_address
from wallet.encoding import Genesis, Policy
from wallet.wallet import Wallet

if TYPE_CHECKING:
    from tui.service import ServiceEvent, WalletService

PASSPHRASE = "demo passphrase"  # throwaway wallets in a scratch directory
FUNDS_MINOR = 10_000  # what the mint issues each account: 100.00 EUR
SHOP_PAYS_EVERY_S = 30.0  # how often the coffee shop pays alice back while the demo runs
SHOP_PAYS_MINOR = 150  # 1.50 EUR each time
COFFEE_MINOR = 350  # what a coffee costs at the demo's shop: 3.50 EUR
SHOP_ANSWERS_AFTER_S = 2.0  # how long the shop "looks at" a request before paying it
REQUESTS_QUEUED_MAX = 16  # requests waiting for the shop; more are not answered
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

    def __init__(self, workdir: Path, *, owns_dir: bool = False) -> None:
        """The demo's files go in ``workdir`` (removed afterwards when ``owns_dir``)."""
        self.dir = workdir
        self.owns_dir = owns_dir
        self.alice = workdir / "alice"
        self.shop = workdir / "coffee-shop"
        self.mint = workdir / "mint"
        self.relay: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.answered: list[str] = []  # the request URIs the shop paid
        self._stop = threading.Event()
        self._requests: queue.Queue[str] = queue.Queue(REQUESTS_QUEUED_MAX)
        self._shop: threading.Thread | None = None

    def start(self, say: Callable[[str], None] = print) -> WalletService:
        """Make the network, start the relay, fund both accounts, set the coffee shop
        going; the wallet service of alice's wallet (unlocked with the demo's
        passphrase), whose requests the shop answers."""
        from tui.service import WalletService

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
        for home, label in ((self.alice, "alice-phone"), (self.shop, "coffee-till")):
            w = Wallet.join(home, genesis.raw)
            try:
                w.init(PASSPHRASE, label=label, limits=limits)
            finally:
                w.close()
            _tally(home, "relays", "add", self.url)
        say("the mint issues 100.00 EUR to alice and the coffee shop; the witness makes "
            "it final…")
        m = Wallet.open(self.mint)
        try:
            for home in (self.alice, self.shop):
                to = parse_address(_tally(home, "address").strip())
                m.pay(to, FUNDS_MINOR, PASSPHRASE)
        finally:
            m.close()
        _tally(self.mint, "sync", "--relay", self.url, "--once")
        _tally(self.shop, "sync", "--once")
        os.environ[keyfiles.PASSPHRASE_ENV] = PASSPHRASE  # the app unlocks without asking
        service = WalletService.open(self.alice)
        service.subscribe(self._on_alice_event)
        self._shop = threading.Thread(target=self._shop_runs, name="demo-coffee-shop",
                                      daemon=True)
        self._shop.start()
        return service

    def coffee_request(self) -> str:
        """A request of the coffee shop's till for a coffee (a ``tally:`` URI)."""
        doc = json.loads(_tally(self.shop, "request", f"{COFFEE_MINOR / 100:.2f}", "--memo",
                                "a flat white", "--expires", "1h", "--json"))
        return str(doc["request"])

    def _on_alice_event(self, event: ServiceEvent) -> None:
        """Alice made a request: the coffee shop will pay it."""
        from tui.service import RequestMade

        if isinstance(event, RequestMade):
            with contextlib.suppress(queue.Full):  # a flood of requests: the rest wait
                self._requests.put_nowait(event.request.uri())

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

    def _shop_runs(self) -> None:
        """The coffee shop pays each request alice makes, and pays her back now and
        then, as another person would."""
        alice = _tally(self.alice, "address").strip()
        next_payback = time.monotonic() + SHOP_PAYS_EVERY_S
        while not self._stop.is_set():
            try:
                uri = self._requests.get(timeout=0.2)
            except queue.Empty:
                uri = None
            try:
                if uri is not None:
                    if self._stop.wait(SHOP_ANSWERS_AFTER_S):
                        return
                    _tally(self.shop, "pay", uri, "--yes")
                    _tally(self.shop, "sync", "--once")
                    self.answered.append(uri)
                elif time.monotonic() >= next_payback:
                    next_payback = time.monotonic() + SHOP_PAYS_EVERY_S
                    _tally(self.shop, "pay", alice, f"{SHOP_PAYS_MINOR / 100:.2f}", "--yes",
                           "--memo", "thanks for coming by")
                    _tally(self.shop, "sync", "--once")
            except (RuntimeError, subprocess.TimeoutExpired):
                continue  # a busy moment, or a request it cannot pay: carry on

    def stop(self) -> None:
        """Stop the coffee shop and the relay."""
        self._stop.set()
        if self._shop is not None:
            self._shop.join(10)
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.relay.wait(10)
            if self.relay.poll() is None:
                self.relay.kill()


def run_live_demo(workdir: Path | None = None) -> None:
    """Open the app, which starts the demo and works on its wallet; everything the
    demo started stops when the app quits (and its directory goes, unless given)."""
    from tui.app import TallyApp

    home = workdir if workdir is not None else Path(tempfile.gettempdir())
    TallyApp(None, home=home, demo=True, demo_dir=workdir).run()
