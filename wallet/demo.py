"""``tally demo``: a scripted walk-through on a local network with an in-process witness.

It creates a network with one witness (q = 1), funds two wallets, pays, and shows the
statuses turn final as the witness votes. Wallets talk through payment bundles (files),
the transport that needs no network at all; the witness sits on a hub wallet, as it will
on a relay.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from wallet import keys as keyfiles
from wallet.amounts import format_amount
from wallet.bundle import read_bundle, write_bundle
from wallet.encoding import Genesis, Policy, id_text, short
from wallet.wallet import Wallet
from wallet.witness import SqliteClaims, Witness

PASSPHRASE = "demo passphrase"  # throwaway wallets in a temp dir


def _carry(src: Wallet, dst: Wallet, workdir: Path) -> int:
    """Move what ``src`` holds to ``dst`` through a bundle file; return entries new there."""
    path = workdir / "carry.bundle"
    write_bundle(path, src.network, src.bodies(src.export_ids()))
    report = dst.ingest_bodies(read_bundle(path, dst.network))
    path.unlink()
    return report.new


def run_demo(out: Any, workdir: Path | None = None) -> dict[str, Any]:
    """Run the walk-through, printing as it goes; return the final figures."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tally-demo-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    limits = keyfiles.FAST_INSECURE
    try:
        witness_key = SigningKey.generate()
        issuer_key = SigningKey.generate()
        genesis = Genesis(
            "demo", "EUR", 2, bytes(issuer_key.verify_key), (bytes(witness_key.verify_key),), 1,
            Policy(5000, 10000, 100000, 86400),
        ).signed(issuer_key)
        out.say(f"1. network 'demo' ({id_text(genesis.network_id)[:12]}…): EUR, one witness, q = 1")
        mint = Wallet.create_network(workdir / "issuer", genesis, issuer_key, PASSPHRASE,
                                     limits=limits)
        hub = Wallet.join(workdir / "hub", genesis.raw)
        witness = Witness(witness_key, SqliteClaims(workdir / "hub" / "claims.db"))
        alice = Wallet.join(workdir / "alice", genesis.raw)
        bob = Wallet.join(workdir / "bob", genesis.raw)
        alice.init(PASSPHRASE, label="alice-phone", limits=limits)
        bob.init(PASSPHRASE, label="bob-laptop", limits=limits)
        out.say(f"2. wallets: alice {short(alice.device or b'')}…, bob {short(bob.device or b'')}…")
        wallets = {"issuer": mint, "alice": alice, "bob": bob}

        def sync_all() -> None:
            for w in wallets.values():
                _carry(w, hub, workdir)
            votes = witness.vote(hub.ledger)
            hub.ingest(votes)
            for w in wallets.values():
                _carry(hub, w, workdir)

        def show(step: str, w: Wallet, block_id: bytes) -> None:
            st = w.status(block_id)
            out.say(f"{step}: {st.label if st else 'unknown'}")

        def money(w: Wallet) -> str:
            b = w.ledger.balance(w.device or b"")
            return (f"spendable {format_amount(b.spendable, 2)} EUR, "
                    f"incoming {format_amount(b.incoming, 2)} EUR")

        sync_all()
        issue, st = mint.pay(alice.address(), 10000, PASSPHRASE)
        out.say(f"3. the issuer issues 100.00 EUR to alice: {st.label} (no witness has voted)")
        _carry(mint, alice, workdir)
        alice.receive(PASSPHRASE)
        out.say(f"   alice claims it: {money(alice)}")
        sync_all()
        show("   after the witness votes, the issue is", alice, issue.id)
        out.say(f"   alice: {money(alice)}")
        pay, st = alice.pay(bob.address(), 1250, PASSPHRASE, memo="lunch")
        out.say(f"4. alice pays bob 12.50 EUR (memo sealed to bob): {st.label}")
        _carry(alice, bob, workdir)
        bob.receive(PASSPHRASE)
        show("   bob takes the payment offline; it is", bob, pay.id)
        out.say(f"   bob: {money(bob)}")
        sync_all()
        show("5. both sync with the hub; the witness votes; the payment is", bob, pay.id)
        bob.receive(PASSPHRASE)
        sync_all()
        out.say(f"   bob: {money(bob)}; memo: {bob.memo(bob.ledger.blocks[pay.id], PASSPHRASE)!r}")
        out.say(f"   alice: {money(alice)}")
        figures = {
            "alice_spendable": alice.ledger.balance(alice.device or b"").spendable,
            "bob_spendable": bob.ledger.balance(bob.device or b"").spendable,
            "payment_status": bob.status(pay.id).label if bob.status(pay.id) else "unknown",
            "issue_status": alice.status(issue.id).label if alice.status(issue.id) else "?",
        }
        out.put(**figures)
        out.say("done: every payment is final, and no balance went below zero.")
        for w in (*wallets.values(), hub):
            w.close()
        return figures
    finally:
        if tmp is not None:
            tmp.cleanup()
