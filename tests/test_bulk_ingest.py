"""A big batch is merged while its signatures are checked, and commits only if all hold.

``Wallet.ingest_bodies`` overlaps the merge of a batch of ``PROCESS_CHECK_MIN`` or more
entries with the signature checks in worker processes (here the threshold is lowered
so a small batch takes that path; a batch under it is checked first, in threads). A
forged entry anywhere in it (first, last, in between) refuses the batch whole, naming
its position, and leaves the store and the ledger as they were; the good batch then
goes in as if nothing had happened, with the statuses of a ledger fed it directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.clikit import store_snapshot
from tests.ledgerkit import Net
from wallet import wallet as wallet_mod
from wallet.encoding import SIG_BYTES, parse_entry
from wallet.errors import EncodingError
from wallet.ledger import Ledger
from wallet.verify_pool import Checks
from wallet.wallet import PARALLEL_VERIFY_MIN, Wallet


def big_batch() -> tuple[Net, list[bytes]]:
    """Opens, issues and their votes: a little over ``PARALLEL_VERIFY_MIN`` entries."""
    net = Net(witnesses=1, quorum=1)
    led = net.ledger()
    made = []
    devices = [net.account().devices[0] for _ in range(40)]
    while len(made) + len(net.opens) < PARALLEL_VERIFY_MIN + 200:
        for d in devices:
            iss = net.issue(led, d, 5)
            votes = net.votes(iss)
            led.add([iss, *votes])
            made.extend([iss, *votes])
    return net, [e.raw for e in (*net.opens, *made)]


def forged(body: bytes) -> bytes:
    """The entry with one bit of its signature flipped."""
    sig = bytearray(body[-SIG_BYTES:])
    sig[5] ^= 1
    return body[:-SIG_BYTES] + bytes(sig)


@pytest.mark.parametrize("path", ["processes", "threads"])
@pytest.mark.parametrize("at", ["first", "middle", "last"])
def test_a_forged_entry_in_a_big_batch_refuses_it_whole(
        tmp_path: Path, at: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Checks] = []

    class Spied(Checks):
        def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
            started.append(self)
            super().__init__(*a, **kw)

    monkeypatch.setattr(wallet_mod, "Checks", Spied)
    if path == "processes":
        monkeypatch.setattr(wallet_mod, "PROCESS_CHECK_MIN", 1000)
    net, bodies = big_batch()
    w = Wallet.join(tmp_path / "w", net.genesis.raw)
    before = store_snapshot(w.home)
    n = {"first": 0, "middle": len(bodies) // 2, "last": len(bodies) - 1}[at]
    bad = [*bodies[:n], forged(bodies[n]), *bodies[n + 1:]]
    with pytest.raises(EncodingError, match=f"entry #{n}"):
        w.ingest_bodies(bad)
    assert store_snapshot(w.home) == before
    assert len(w.ledger) == 0, "the ledger's caches were rolled back too"
    report = w.ingest_bodies(bodies)
    assert report.new == len(bodies)
    direct = Ledger(net.genesis)
    direct.add([parse_entry(b, verify=False) for b in bodies])
    assert dict(w.ledger.status.items()) == dict(direct.status.items())
    reopened = Wallet.open(w.home)
    assert len(reopened.ledger) == len(bodies)
    assert len(started) == (2 if path == "processes" else 0)


@pytest.mark.parametrize("worker", ["real", "dies at once", "dies mid-frame"])
def test_the_checks_find_the_first_forged_entry_whatever_the_workers_do(
        worker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if worker == "dies at once":
        monkeypatch.setattr(Checks, "command", (sys.executable, "-c", "pass"))
    elif worker == "dies mid-frame":  # reads a little of the first frame, then exits
        monkeypatch.setattr(Checks, "command", (
            sys.executable, "-c", "import sys; sys.stdin.buffer.read(100)"))
    _, bodies = big_batch()
    entries = [parse_entry(b, verify=False) for b in bodies]
    assert Checks(entries, workers=2).result() is None
    for n in (len(entries) - 1, 7, len(entries) // 3):
        bad = list(entries)
        bad[n] = parse_entry(forged(bodies[n]), verify=False)
        bad[-1 if n != len(entries) - 1 else 0] = parse_entry(
            forged(bodies[-1 if n != len(entries) - 1 else 0]), verify=False)
        first = min(n, len(entries) - 1 if n != len(entries) - 1 else 0)
        assert Checks(bad, workers=2).result() == first
