"""The relay database's schema 1 → 2: every entry moves to its network's ledger file.

A version-1 file is written here as tally-relay 1 wrote it (one ``entries`` table for
every network, claims and quotas beside it); the real ``tally-relay`` refuses to serve
it, ``tally-relay migrate`` moves it, and the migrated relay serves the same ledger
(statuses, claims, quotas) without a replay on start.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path

from server.store import SCHEMA_VERSION, SqliteRelayStore, network_path
from tests.test_relay import (
    connected,
    device_client,
    make_network,
    relay_command,
    relay_env,
    start_relay,
    stored_entries,
)
from wallet.encoding import Entry
from wallet.ledger import Ledger

V1_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE networks (network BLOB PRIMARY KEY, genesis BLOB NOT NULL)",
    "CREATE TABLE entries (pos INTEGER PRIMARY KEY AUTOINCREMENT, network BLOB NOT NULL, "
    "id BLOB NOT NULL, body BLOB NOT NULL, UNIQUE (network, id))",
    "CREATE INDEX entries_by_network ON entries (network, pos)",
    "CREATE TABLE claims (network BLOB NOT NULL, device BLOB NOT NULL, slot INTEGER NOT NULL, "
    "block BLOB NOT NULL, PRIMARY KEY (network, device, slot))",
    "CREATE TABLE quota (network BLOB NOT NULL, device BLOB NOT NULL, day TEXT NOT NULL, "
    "count INTEGER NOT NULL, PRIMARY KEY (network, device, day))",
]


def write_v1(db: Path, genesis: bytes, network: bytes, entries: list[Entry],
             claims: list[tuple[bytes, int, bytes]], quota: list[tuple[bytes, str, int]]
             ) -> None:
    """A relay database as schema version 1 kept it."""
    conn = sqlite3.connect(db)
    for sql in V1_SCHEMA:
        conn.execute(sql)
    conn.execute("INSERT INTO meta VALUES ('schema_version', 1)")
    conn.execute("INSERT INTO meta VALUES ('store_id', ?)", (b"s" * 16,))
    conn.execute("INSERT INTO networks VALUES (?, ?)", (network, genesis))
    conn.executemany("INSERT INTO entries (network, id, body) VALUES (?, ?, ?)",
                     [(network, e.id, e.raw) for e in entries])
    conn.executemany("INSERT INTO claims VALUES (?, ?, ?, ?)",
                     [(network, d, s, b) for d, s, b in claims])
    conn.executemany("INSERT INTO quota VALUES (?, ?, ?, ?)",
                     [(network, d, day, n) for d, day, n in quota])
    conn.commit()
    conn.close()


def test_a_v1_database_is_refused_then_migrated_and_served_as_before(tmp_path: Path) -> None:
    nw = make_network(tmp_path)
    net = nw.net
    alice, bob = net.account(label="alice"), net.account(label="bob")
    led = net.ledger()
    iss = net.issue(led, alice[0], 50)
    led.add([iss, net.vote(iss)])
    rec = net.receive(led, alice[0], iss)
    led.add([rec])
    pay = net.send(led, alice[0], bob[0], 20)
    led.add([pay, net.vote(rec)])
    entries = list(led.arrivals)  # in arrival order, as a relay would have stored them
    chain = led.chain(net.mint.pk)
    claims = [(net.mint.pk, s, chain[s]) for s in range(len(chain))]
    db = tmp_path / "old.db"
    write_v1(db, net.genesis.raw, net.id, entries, claims, [(alice[0].pk, "2026-12-03", 3)])

    refused = subprocess.run(
        relay_command("--db", db, "--listen", "127.0.0.1:0", "--network", nw.genesis),
        env=relay_env(), capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "schema version 1" in refused.stderr
    assert f"tally-relay migrate --db {db}" in refused.stderr
    assert "Traceback" not in refused.stderr

    moved = subprocess.run(relay_command("migrate", "--db", db), env=relay_env(),
                           capture_output=True, text=True, timeout=60)
    assert moved.returncode == 0, moved.stderr
    assert f"schema version 1 → {SCHEMA_VERSION}" in moved.stdout
    assert f"test: {len(entries)}/{len(entries)} entries" in moved.stderr  # its progress
    main = sqlite3.connect(db)
    tables = {n for (n,) in main.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    main.close()
    assert tables == {"meta", "networks"}, "the v1 tables are gone from the main file"
    again = subprocess.run(relay_command("migrate", "--db", db), env=relay_env(),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "up to date" in again.stdout

    store = SqliteRelayStore(db)
    served = Ledger(net.genesis, store.tables(net.id))
    assert len(served) == len(entries)
    for e in entries:  # the same derived state as a ledger that never moved
        assert served.status.get(e.id) == led.status.get(e.id), e
    assert served.balance(alice[0].pk) == led.balance(alice[0].pk)
    assert [store.last(net.id, net.mint.pk)] == [claims[-1][1:]]
    conn = sqlite3.connect(network_path(db, net.id))
    assert conn.execute("SELECT device, day, count FROM quota").fetchall() == [
        (alice[0].pk, "2026-12-03", 3)]
    conn.close()
    store.close()

    relay = start_relay(tmp_path, "--network", nw.genesis, "--witness-key", nw.witness_key,
                        db=db)

    async def fresh_device_catches_up() -> None:
        c = await connected(relay.url, device_client(net, bob[0]))
        await c.wait(lambda: pay.id in c.ledger and c.final(pay), what="the payment final")
        await c.close()

    asyncio.run(fresh_device_catches_up())
    assert relay.stop() == 0
    held = {e.id for e in stored_entries(db)}
    assert {e.id for e in entries} <= held
