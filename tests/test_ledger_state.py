"""The ledger's state on disk (issue 13): a store of an older schema is rebuilt once, and
``tally doctor`` finds a stored state that differs from a rebuild."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.clikit import PASSPHRASE, api_fund, api_network, api_wallets, fail, run, tj
from wallet.address import parse_address
from wallet.doctor import examine
from wallet.wallet import Wallet


def _paid_wallets(tmp_path: Path) -> tuple[Path, Path]:
    api_network(tmp_path, "state")
    payer, payee = api_wallets(tmp_path / "g", tmp_path / "payer", tmp_path / "payee")
    api_fund(tmp_path / "issuer", payer, 1000)
    w = Wallet.open(payer.path)
    try:
        for n in range(3):
            w.pay(parse_address(payee.address), 10 + n, PASSPHRASE)
    finally:
        w.close()
    return payer.path, tmp_path / "issuer"


def _as_schema_2(db: Path) -> None:
    """Turn a store into the layout schema 2 had: entries with ``claim`` and statuses,
    devices with balances, none of the derived tables."""
    conn = sqlite3.connect(str(db))
    conn.executescript("""
        CREATE TABLE e2 (ref INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, body BLOB NOT NULL,
            kind INTEGER NOT NULL, dev INTEGER NOT NULL, seq INTEGER NOT NULL, amount INTEGER,
            peer INTEGER, state INTEGER, reason TEXT, final INTEGER, seen INTEGER NOT NULL,
            claim BLOB);
        INSERT INTO e2 SELECT ref, id, body, kind, dev, seq, amount, peer, state, reason,
            final, seen, CASE WHEN kind = 4 THEN target END FROM entries;
        CREATE TABLE d2 (ref INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, account BLOB,
            label TEXT, spendable INTEGER NOT NULL DEFAULT 0, incoming INTEGER NOT NULL
            DEFAULT 0, moving INTEGER NOT NULL DEFAULT 0, to_claim INTEGER NOT NULL DEFAULT 0);
        INSERT INTO d2(ref, key, account, label) SELECT ref, key, account, label FROM devices;
        DROP TABLE entries; DROP TABLE devices; DROP TABLE waits; DROP TABLE routes;
        DROP TABLE below; DROP TABLE buckets;
        ALTER TABLE e2 RENAME TO entries; ALTER TABLE d2 RENAME TO devices;
        UPDATE entries SET seen = 1000 + ref;
    """)
    conn.commit()
    conn.close()


def test_a_schema_2_store_is_rebuilt_once_with_its_times_kept(tmp_path: Path) -> None:
    home, _ = _paid_wallets(tmp_path)
    before = tj(home, "balance")
    history = tj(home, "history")
    _as_schema_2(home / "wallet.db")
    assert tj(home, "balance") == before  # opening it rebuilt the state
    again = tj(home, "history")
    assert [r["id"] for r in again["history"]] == [r["id"] for r in history["history"]]
    assert [r["status"] for r in again["history"]] == [r["status"] for r in history["history"]]
    w = Wallet.open(home)
    try:
        assert not w.store.needs_rebuild
        seen = w.store.conn.execute("SELECT min(seen), max(seen) FROM entries").fetchone()
        assert seen[0] >= 1001 and seen[1] <= 1000 + w.store.count()  # first-seen kept
        assert examine(w.store, w.genesis).ok
    finally:
        w.close()


def test_doctor_names_a_stored_status_that_a_rebuild_does_not_give(tmp_path: Path) -> None:
    home, _ = _paid_wallets(tmp_path)
    assert tj(home, "doctor")["ok"]
    conn = sqlite3.connect(str(home / "wallet.db"))
    conn.execute("UPDATE entries SET state = 2, reason = 'overspend' WHERE ref = "
                 "(SELECT max(ref) FROM entries WHERE kind = 2)")
    conn.execute("UPDATE devices SET tot_sent = tot_sent + 1 WHERE ref = "
                 "(SELECT dev FROM entries WHERE kind = 2 LIMIT 1)")
    conn.commit()
    conn.close()
    p = run(home, "doctor")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("tally: error: the stored state differs from a rebuild in ")
    assert "state 2 stored, 1 rebuilt" in p.stdout and "tot_sent" in p.stdout, p.stdout
    assert "differs from a rebuild" in fail(home, "doctor", "--json")


def test_a_batch_whose_transaction_fails_leaves_no_trace_in_the_ledger(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    home, issuer = _paid_wallets(tmp_path)
    w = Wallet.open(home)
    iw = Wallet.open(issuer)
    try:
        before = w.balance()
        issue, _ = iw.pay(w.address(), 7, PASSPHRASE)
        entries = [e for e in iw.ledger.tables.entries(iw.export_ids(w.address())).values()
                   if e.id not in w.ledger]
        assert issue.id in {e.id for e in entries}

        def broken(records: dict) -> None:
            raise RuntimeError("disk full")

        monkeypatch.setattr(w.store, "set_metas", broken)
        with pytest.raises(RuntimeError, match="disk full"):
            w._ingest(entries, meta={"k": "v"})
        assert issue.id not in w.ledger and w.balance() == before
        monkeypatch.undo()
        assert examine(w.store, w.genesis).ok
        w.ingest(entries)
        assert w.status(issue.id) is not None
    finally:
        w.close()
        iw.close()
