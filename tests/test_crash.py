"""A crash at any instant loses nothing that was acknowledged (DESIGN §6).

A child process pays in a loop and prints each payment's id only after ``Wallet.pay``
returned (after its commit); the parent kills it with SIGKILL at random moments, round
after round on the same home, then checks the store: every acknowledged payment is
there and valid, SQLite's integrity check passes, and the statuses and balances stored
agree with a ledger rebuilt (and re-verified) from the stored bodies.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clikit import PASSPHRASE, api_fund, api_network, api_wallets, tally_env
from wallet.address import parse_address
from wallet.doctor import examine
from wallet.encoding import Genesis, Kind, id_from_text
from wallet.ledger import ACCEPTED_WORD
from wallet.wallet import Wallet

pytestmark = pytest.mark.slow

ROUNDS = 10
FUNDS = 1_000_000

CHILD = r"""
import sys
from pathlib import Path

from wallet.address import parse_address
from wallet.encoding import id_text
from wallet.wallet import Wallet

home, to, passphrase = sys.argv[1:4]
w = Wallet.open(Path(home))
to = parse_address(to)
print("ready", flush=True)
while True:
    block, st = w.pay(to, 1, passphrase)
    print(f"{id_text(block.id)} {st.state}", flush=True)  # only after pay returned: committed
"""


def _round(home: Path, to: str, delay: float, tmp: Path) -> tuple[list[str], int]:
    """Start the payer, let it pay for ``delay`` seconds, SIGKILL it; what it reported."""
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(home), to, PASSPHRASE],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=tally_env(), cwd=tmp)
    try:
        first = p.stdout.readline() if p.stdout else ""
        assert first == "ready\n", first + (p.stderr.read() if p.stderr else "")
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGKILL, f"the payer died by itself: {err}"
    ids = []
    # A line the kill cut short (no newline yet) was never reported whole: not counted.
    for line in out.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        pid, state = line.split()
        assert state == "valid", line  # q = 0: valid at once ("accepted, no witness")
        ids.append(pid)
    return ids, p.returncode


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    g = api_network(tmp_path, "crash")
    payer, payee = api_wallets(tmp_path / "g", tmp_path / "payer", tmp_path / "payee")
    api_fund(tmp_path / "issuer", payer, FUNDS)

    reported: list[str] = []
    for r in range(ROUNDS):
        ids, _ = _round(payer.path, payee.address, rng.uniform(0.05, 0.5), tmp_path)
        reported += ids
        # Each round reopens the same home after the kill and carries on from there.
        w = Wallet.open(payer.path)
        try:
            for pid in ids:
                st = w.status(id_from_text(pid))
                assert st is not None and st.label == ACCEPTED_WORD, (seed, r, pid, st)
        finally:
            w.close()
    assert len(reported) >= ROUNDS, f"seed {seed}: the payer hardly paid ({len(reported)})"

    w = Wallet.open(payer.path)
    try:
        assert w.store.integrity_check() == "ok"
        led = w.ledger
        device = parse_address(payer.address).device
        chain = led.chain(device)
        sends = [led.blocks[i] for i in chain if led.blocks[i].kind == Kind.SEND]
        assert [led.blocks[i].seq for i in chain] == list(range(len(chain)))
        assert len(chain) == 2 + len(sends)  # open, receive, then only sends
        sent_ids = {s.id for s in sends}
        for pid in reported:
            assert id_from_text(pid) in sent_ids, (seed, pid)
            assert w.status(id_from_text(pid)).label == ACCEPTED_WORD
        # At most one payment per round committed but not yet reported when killed.
        assert len(sends) - len(reported) <= ROUNDS, seed
        assert len(set(reported)) == len(reported)
        assert w.balance()[device].spendable == FUNDS - len(sends)
        # The wallet is still usable.
        _, st = w.pay(parse_address(payee.address), 1, PASSPHRASE)
        assert st.label == ACCEPTED_WORD and not st.shown_final
    finally:
        w.close()

    _check_derived_state_matches_a_rebuild(payer.path, g)


def _check_derived_state_matches_a_rebuild(home: Path, genesis: Genesis) -> None:
    """The derived state in the store equals that of a ledger rebuilt from the stored
    bodies, every signature checked again (``tally doctor``'s check), and no fork."""
    w = Wallet.open(home)
    try:
        report = examine(w.store, w.genesis)
        assert report.ok and report.entries == w.store.count(), report.differences
        assert w.ledger.fraud_proofs() == []
        assert w.genesis == genesis
    finally:
        w.close()
