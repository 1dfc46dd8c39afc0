"""Two app instances, each in its own process over its own home, pay each other through
a real ``tally-relay`` with a witness, and both see both payments final.

A network with one witness; the relay holds the witness key; alice and bob are funded
by the issuer (through the relay) and remember it. Two ``tests.app_driver`` processes
run concurrently, each driving ``TallyApp`` with key presses: alice pays bob 12.50 and
bob pays alice 3.00, and each waits to see its own payment final on the Pay screen and
the other's arrive (a notification) and its credit turn final (Home's spendable money
rising by it, nothing left incoming or to claim; History's claim of it final).
Afterwards the ``tally balance`` command agrees with what the apps showed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.clikit import api_wallets, run_many, tally_env, tj
from tests.test_app import witnessed_network
from tests.test_relay import ROOT, start_relay
from wallet.address import parse_address
from wallet.encoding import short

DRIVER_TIMEOUT_S = 45
"""How long each app process may take, at most (it prints why it got stuck)."""


def start_driver(home: Path, funds: str, to: str, pay: str, expect: str
                 ) -> subprocess.Popen[str]:
    """Start ``python -m tests.app_driver`` for one wallet (the ledger's checks on)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.app_driver", "--home", str(home), "--funds", funds,
         "--to", to, "--pay", pay, "--expect", expect, "--timeout", str(DRIVER_TIMEOUT_S)],
        cwd=ROOT, env=tally_env(TALLY_CHECK="1"), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(name: str, proc: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    """Wait for a driver (until ``deadline``); its one JSON line, after it exited 0."""
    out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    lines = out.splitlines()
    assert len(lines) == 1, f"{name}: stdout {out!r}, stderr {err[-3000:]}"
    seen = json.loads(lines[0])
    assert proc.returncode == 0, (f"{name} exited {proc.returncode}: "
                                  f"{json.dumps(seen, indent=1)}\n{err[-3000:]}")
    return seen


def history_line(seen: dict[str, Any], text: str) -> str:
    """The one line of the history the driver read that contains ``text``."""
    lines = [ln for ln in seen["history"] if text in ln]
    assert len(lines) == 1, (text, seen["history"])
    return lines[0]


@pytest.mark.slow
def test_two_app_processes_pay_each_other_through_a_relay_and_see_it_final(
        tmp_path: Path) -> None:
    key, genesis = witnessed_network(tmp_path, "Two")
    relay = start_relay(tmp_path, "--network", genesis, "--witness-key", key)
    drivers: list[subprocess.Popen[str]] = []
    try:
        alice, bob = api_wallets(genesis, tmp_path / "alice", tmp_path / "bob")
        tj(tmp_path / "issuer", "issue", alice.address, "50.00", "--yes")
        tj(tmp_path / "issuer", "issue", bob.address, "20.00", "--yes")
        for done in run_many([(tmp_path / "issuer", "sync", "--relay", relay.url, "--once"),
                              (alice.path, "relays", "add", relay.url),
                              (bob.path, "relays", "add", relay.url)]):
            assert done.returncode == 0, (done.args, done.stderr)

        drivers = [start_driver(alice.path, "50.00", bob.address, "12.50", "3.00"),
                   start_driver(bob.path, "20.00", alice.address, "3.00", "12.50")]
        deadline = time.monotonic() + DRIVER_TIMEOUT_S + 20
        a_seen = finish("alice's app", drivers[0], deadline)
        b_seen = finish("bob's app", drivers[1], deadline)
    finally:
        for proc in drivers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        relay.stop()

    for seen, peer, paid, got, want in (
            (a_seen, bob, "12.50", "3.00", 5000 - 1250 + 300),
            (b_seen, alice, "3.00", "12.50", 2000 - 300 + 1250)):
        summary = json.dumps(seen, indent=1)
        other = short(parse_address(peer.address).device)
        # each saw its own payment go from signed to final on the Pay screen
        assert seen["paid_final"] is True, summary
        assert f"Pay {paid} EUR to {other}…?" in seen["question"].replace(
            "[b]", "").replace("[/b]", ""), summary
        assert seen["pay_statuses"][-1].endswith(": final"), summary
        assert f"paid {paid} EUR" in seen["notifications"], summary
        # and the other's payment arrive (a notification naming the payer's device) ...
        assert any(m.startswith(f"{got} EUR arrived from {other}…")
                   for m in seen["notifications"]), summary
        # ... and its credit final: Home's spendable is funds − paid + got, nothing
        # incoming or to claim, and History shows the claim and the payment final
        assert seen["arrived_final"] is True, summary
        assert f"{got} EUR from {other}… is final" in seen["notifications"], summary
        assert seen["home_after"]["spendable_minor"] == want, summary
        assert seen["home_after"]["incoming_minor"] == 0, summary
        assert history_line(seen, f"receive  +{got} EUR from {other}…").endswith(" final")
        assert history_line(seen, f"-{paid} EUR to {other}…").endswith(" final")

    # the command line, reading each home afresh, agrees
    for home, want in ((alice.path, 4050), (bob.path, 2950)):
        bal = tj(home, "balance")
        assert (bal["spendable_minor"], bal["incoming_minor"], bal["to_claim_minor"],
                bal["moving_minor"]) == (want, 0, 0, 0), bal
        assert bal["witnessed"] is True
