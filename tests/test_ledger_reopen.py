"""A ledger reopened over its SQLite file is the ledger that never closed.

Every piece of derived state (statuses, balances, main chains and frontiers, fork and
fraud proofs, vote coverage, the worklist tables) lives in ``LedgerTables`` and is read
lazily through caches, so closing the connection at any batch boundary and opening a new
connection, new tables and a new ``Ledger`` over the same file must change nothing.

A random network (``test_replica_convergence.scenario``: payments, votes and a cloned
device; or a run of ``test_ledger_network.Sim``: zero to three witnesses, revokes,
clones, thieves, now and then an evil witness) is shuffled and cut into batches (some
re-sending entries already held), fed to a ledger over a file that is closed and
reopened at random boundaries, and to a ledger that never closes. Wherever it is drawn
(a reopened ledger is also fed cold, with no query in between), and at the end:

- the reopened ledger answers every query as the never-closed one does, returned the
  same status changes for every batch, and its file holds the same rows (every table,
  every column but the arrival time);
- it answers every query as a ledger fed the same entries from scratch in one batch,
  and its order-independent stored state (statuses, bookings, device rows) is that one's.

Now and then every cache is shrunk to a couple of items, so that evictions between
batches act as partial reopens. And a batch that fails (refused before the transaction,
rolled back inside it, rolled back by the caller's transaction) leaves a file that
reopens to the ledger of before, which then takes the rest as if nothing had happened.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.ledgerkit import Net, entries
from tests.test_ledger_network import Sim
from tests.test_replica_convergence import scenario
from wallet import ledger as ledger_mod
from wallet import ledger_tables as tables_mod
from wallet.encoding import Block, Entry, Genesis, Kind
from wallet.ledger import Ledger, StatusChange
from wallet.ledger_tables import LedgerTables, transaction


@dataclass(frozen=True)
class World:
    """A network's genesis and a set of its entries (opens included)."""

    genesis: Genesis
    entries: tuple[Entry, ...]
    label: str

    @property
    def ids(self) -> list[bytes]:
        return sorted(e.id for e in self.entries)

    @property
    def blocks(self) -> list[Block]:
        return sorted((e for e in self.entries if isinstance(e, Block)), key=lambda b: b.id)

    @property
    def devices(self) -> list[bytes]:
        return sorted({b.device for b in self.blocks})

    @property
    def accounts(self) -> list[bytes]:
        return sorted({b.account for b in self.blocks if b.kind == Kind.OPEN})


def scenario_world(seed: int) -> World:
    net, made = scenario(seed)
    return World(net.genesis, (*net.opens, *made), f"scenario({seed})")


def sim_world(n: int, q: int, accounts: list[int], steps: int, seed: int, evil: bool) -> World:
    sim = Sim(n, q, accounts, seed, evil)
    for _ in range(steps):
        sim.step()
    held: dict[bytes, Entry] = {}
    for rep in sim.replicas:
        for e in entries(rep.led):
            held[e.id] = e
    return World(sim.net.genesis, tuple(held.values()),
                 f"Sim({n}, {q}, {accounts}, {seed}, evil={evil}) x {steps}")


@st.composite
def worlds(draw: st.DrawFn) -> World:
    if draw(st.integers(0, 3)) == 0:
        return scenario_world(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 3))
    q = 0 if n == 0 else draw(st.integers(n // 2 + 1, min(n, 2)))
    accounts = draw(st.lists(st.integers(1, 3), min_size=2, max_size=3))
    steps = draw(st.integers(30, 110))
    seed = draw(st.integers(0, 2**32 - 1))
    evil = n > 0 and draw(st.integers(0, 4)) == 0
    return sim_world(n, q, accounts, steps, seed, evil)


# ------------------------------------------------------------------ what is compared
def _id(b: Block | None) -> bytes | None:
    return None if b is None else b.id


def _ids(bs: list[Block]) -> list[bytes]:
    return [b.id for b in bs]


def view(led: Ledger, world: World) -> dict[str, object]:
    """Every answer of the ledger's public queries over the world's ids, devices and
    accounts (entries not held included: they must read as absent)."""
    ids = world.ids
    block_ids = [b.id for b in world.blocks]
    held_blocks = [b for b in world.blocks if b.id in led]
    out: dict[str, object] = {
        "len": len(led),
        "len blocks": len(led.blocks),
        "len votes": len(led.votes),
        "held": sorted(led.held(ids)),
        "in": [i in led for i in ids],
        "block ids": sorted(led.blocks),
        "vote ids": sorted(led.votes),
        "arrivals": len(led.arrivals),
        "arrived": sorted(e.id for e in led.arrivals.since(0)),
        "status": {i: led.status.get(i) for i in ids},
        "statuses": dict(sorted(led.status.items())),
        "cover": {i: led.cover.get(i) for i in block_ids},
        "certified": {b.id: led.certified(b.id) for b in held_blocks},
        "votes on": {i: led.votes_on(i) for i in block_ids},
        "revoke value": {b.id: led.revoke_value(b.id) for b in held_blocks
                         if b.kind == Kind.REVOKE},
        "devices": sorted(led.devices),
        "opened": sorted(led.opened_devices()),
        "frauds": sorted((p.device, p.seq, p.block_ids, p.equivocation)
                         for p in led.fraud_proofs()),
        "forked devices": led.forked_devices(),
        "digest": led.tables.digest(),
        "buckets": led.tables.bucket_sums(),
    }
    for key in world.devices:
        chain = led.chain(key)
        out[f"device {key.hex()[:12]}"] = {
            "balance": led.balance(key),
            "chain": chain,
            "head": _id(led.head(key)),
            "tip": _id(led.tip(key)),
            "forked": led.forked(key),
            "votable": [_id(led.votable(key, None))]
            + [_id(led.votable(key, (i, bid))) for i, bid in enumerate(chain)],
            "unclaimed": _ids(led.unclaimed_to(key)),
            "payments": _ids(led.payments_to(key)),
            "valid payments": _ids(led.payments_to(key, ["valid"])),
            "revokes naming": _ids(led.revokes_naming(key)),
        }
    for acc in world.accounts:
        out[f"account {acc.hex()[:12]}"] = (led.account_devices(acc), led.account_balance(acc))
    return out


DEVICE_COLS = ("account, label, issuing, nblocks, frontier, cert_top, tot_final, "
               "tot_incoming, tot_sent, forks")


def stored(led: Ledger) -> dict[str, object]:
    """The stored derived state that is a function of the set alone: each entry's status,
    cover, main-chain booking and openness, and each device's row (by key, not by row
    number; not ``tail_done``, the validator's progress mark, nor the display columns a
    receive or revoke is given at arrival)."""
    c = led.tables.conn
    keys = {r: bytes(k) for r, k in c.execute("SELECT ref, key FROM devices")}
    rows = {}
    for (i, kind, dev, seq, amount, peer, target, item, state, reason, final, cover, main,
         cf, ci, sent, open_) in c.execute(
            "SELECT id, kind, dev, seq, amount, peer, target, item, state, reason, final, "
            "cover, main, cf, ci, sent, open FROM entries"):
        payment = kind in (int(Kind.SEND), int(Kind.ISSUE))
        rows[bytes(i)] = (
            kind, keys[dev], seq, amount if payment else None,
            keys.get(peer) if payment or kind == int(Kind.REVOKE) else None,
            None if target is None else bytes(target), item, state, reason, final, cover,
            main, cf, ci, sent, open_)
    devices = {keys[r]: tuple(bytes(v) if isinstance(v, bytes) else v for v in rest)
               for r, *rest in c.execute(f"SELECT ref, {DEVICE_COLS} FROM devices")}
    return {"entries": dict(sorted(rows.items())), "devices": dict(sorted(devices.items()))}


TABLES = ("devices", "entries", "waits", "routes", "below", "buckets")


def dump(led: Ledger) -> dict[str, list[tuple]]:
    """Every row of every table, in key order (the entries without their arrival time)."""
    c = led.tables.conn
    out = {}
    for t in TABLES:
        cols = [r[1] for r in c.execute(f"PRAGMA table_info({t})") if r[1] != "seen"]
        out[t] = sorted(c.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall(),
                        key=repr)
    return out


def _short(x: object) -> object:
    return x.hex()[:12] if isinstance(x, bytes) else x


def assert_same(got: dict, want: dict, what: str) -> None:
    """``got == want``, naming the first keys that differ and how."""
    if got == want:
        return
    bad = []
    for k in sorted(set(got) | set(want), key=repr):
        a, b = got.get(k, "<none>"), want.get(k, "<none>")
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                sub = [(_short(j), a.get(j, "<none>"), b.get(j, "<none>"))
                       for j in sorted(set(a) | set(b), key=repr)
                       if a.get(j, "<none>") != b.get(j, "<none>")]
                bad.append(f"{k}: {sub[:4]}")
            else:
                bad.append(f"{k}: {a!r:.300} != {b!r:.300}")
    raise AssertionError(f"{what}: {len(bad)} differ: " + "\n".join(bad[:6]))


# ------------------------------------------------------------------- ledgers on files
def open_file(genesis: Genesis, path: Path) -> Ledger:
    """A ledger over the file: a new connection, new tables, a new Ledger."""
    return Ledger(genesis, LedgerTables(sqlite3.connect(path, isolation_level=None)))


def reopen(led: Ledger, path: Path) -> Ledger:
    led.tables.conn.close()
    return open_file(led.genesis, path)


def from_scratch(genesis: Genesis, es: list[Entry]) -> Ledger:
    led = Ledger(genesis)
    led.add(es)
    return led


def check(led: Ledger, kept: Ledger, scratch: Ledger, world: World, where: str) -> None:
    """``led`` (over the file) against the never-closed and the from-scratch ledger."""
    v = view(led, world)
    assert_same(v, view(kept, world), f"{where}: against the ledger that never closed")
    assert_same(dump(led), dump(kept), f"{where}: the rows of the ledger that never closed")
    assert_same(v, view(scratch, world), f"{where}: against a ledger fed it all at once")
    assert_same(stored(led), stored(scratch), f"{where}: the stored state of one fed at once")


@contextlib.contextmanager
def caches(tiny: bool) -> Iterator[None]:
    """Every cache capped at a couple of items (when ``tiny``): evicted between batches."""
    if not tiny:
        yield
        return
    with contextlib.ExitStack() as stack:
        for mod, names in ((ledger_mod, ("STATUS_CACHE_MAX", "SET_CACHE_MAX",
                                         "DEVICE_CACHE_BLOCKS_MAX")),
                           (tables_mod, ("ENTRY_CACHE_MAX", "SET_CACHE_MAX"))):
            for name in names:
                stack.enter_context(mock.patch.object(mod, name, 2))
        yield


# ----------------------------------------------------------------------- the property
@settings(max_examples=14, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=worlds(), data=st.data())
def test_a_ledger_reopened_at_random_batch_boundaries_is_the_one_that_never_closed(
        world: World, data: st.DataObject) -> None:
    note(world.label)
    rng = data.draw(st.randoms(use_true_random=False), label="order")
    es = list(world.entries)
    rng.shuffle(es)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(es) - 1), max_size=9), label="cuts"))
    batches = [es[a:b] for a, b in zip([0, *cuts], [*cuts, len(es)], strict=True)]
    if data.draw(st.booleans(), label="resend held entries"):
        sent: list[Entry] = []
        for b in batches:
            again = rng.sample(sent, min(len(sent), rng.randint(0, 5)))
            sent.extend(b)
            b.extend(again)
    # at each boundary: go on, reopen and feed it cold, or reopen and compare first
    plan = [data.draw(st.sampled_from(["go on", "reopen", "reopen and check"]),
                      label=f"after batch {i}") for i in range(len(batches))]
    tiny = data.draw(st.booleans(), label="tiny caches")
    with tempfile.TemporaryDirectory() as tmp, caches(tiny):
        path = Path(tmp) / "ledger.db"
        led = open_file(world.genesis, path)
        kept = Ledger(world.genesis)
        added: list[Entry] = []
        reopened = 0
        try:
            for i, (batch, step) in enumerate(zip(batches, plan, strict=True)):
                got: list[StatusChange] = led.add(batch)
                want: list[StatusChange] = kept.add(batch)
                assert got == want, f"batch {i}: other status changes after {reopened} reopens"
                added.extend(batch)
                if step != "go on":
                    led = reopen(led, path)
                    reopened += 1
                if step == "reopen and check":
                    check(led, kept, from_scratch(world.genesis, added), world,
                          f"reopened after batch {i} of {len(batches)}")
            scratch = from_scratch(world.genesis, added)
            check(led, kept, scratch, world, "at the end, before the last reopen")
            led = reopen(led, path)
            check(led, kept, scratch, world, "at the end, reopened")
            assert len(led) == len(world.entries)
            assert led.add(es) == [] and dump(led) == dump(kept), "all of it again: no change"
        finally:
            led.tables.conn.close()


# ------------------------------------------------------------------ a batch that fails
def _foreign(net: Net, rest: list[Entry]) -> list[Entry]:
    other = Net(witnesses=1, rng=random.Random(99), name="other")
    return [*rest[:10], other.opens[0], *rest[10:20]]


def _stranger_vote(net: Net, rest: list[Entry]) -> list[Entry]:
    stranger = Net(witnesses=1, rng=random.Random(98)).witness_keys[0]
    block = next(e for e in rest if isinstance(e, Block))
    return [*rest[:10], net.vote(block, stranger), *rest[10:20]]


def _fail_in_flush(led: Ledger, batch: list[Entry]) -> None:
    """The batch's rows are written, then the flush fails: the ledger rolls it back."""
    def broken(self: LedgerTables, ids: object) -> None:
        raise RuntimeError("disk full")

    with mock.patch.object(LedgerTables, "add_to_buckets", broken):
        led.add(batch)


def _fail_in_caller_savepoint(led: Ledger, batch: list[Entry]) -> None:
    """Inside the caller's transaction the batch fails (its savepoint is rolled back);
    the caller commits what else it did."""
    with transaction(led.tables.conn):
        led.tables.conn.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT)")
        with contextlib.suppress(RuntimeError):
            _fail_in_flush(led, batch)


def _caller_rolls_back(led: Ledger, batch: list[Entry]) -> None:
    """The batch is written in the caller's transaction, which then fails."""
    with transaction(led.tables.conn):
        led.add(batch)
        raise RuntimeError("the caller's next write failed")


FAILURES: dict[str, tuple[Callable[[Ledger, list[Entry]], None], type[Exception] | None,
                          bool]] = {
    # name: (how the batch is fed, what it raises, whether the same Ledger stays good)
    "entry of another network": (Ledger.add, ValueError, True),
    "vote by a stranger": (Ledger.add, ValueError, True),
    "flush fails": (_fail_in_flush, RuntimeError, True),
    "caller's savepoint fails": (_fail_in_caller_savepoint, None, True),
    "caller rolls back": (_caller_rolls_back, RuntimeError, False),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failed_batch_leaves_a_file_that_reopens_to_the_ledger_of_before(
        tmp_path: Path, failure: str) -> None:
    net, made = scenario(3)
    world = World(net.genesis, (*net.opens, *made), "scenario(3)")
    es = list(world.entries)
    random.Random(5).shuffle(es)
    first, rest = es[: len(es) // 2], es[len(es) // 2 :]
    path = tmp_path / "ledger.db"
    led = open_file(net.genesis, path)
    kept = Ledger(net.genesis)
    led.add(first)
    kept.add(first)
    led = reopen(led, path)  # its caches warm: the failure must not leave them dirty
    before, rows = view(led, world), dump(led)
    feed, raises, same_stays_good = FAILURES[failure]
    bad = {"entry of another network": _foreign, "vote by a stranger": _stranger_vote}.get(
        failure, lambda net, rest: rest[:20])(net, rest)
    if raises is None:
        feed(led, bad)
    else:
        with pytest.raises(raises):
            feed(led, bad)
    if same_stays_good:
        assert_same(view(led, world), before, "the same ledger after the failed batch")
    beside = open_file(net.genesis, path)  # a second connection: what the file holds
    assert_same(view(beside, world), before, "reopened after the failed batch")
    assert_same(dump(beside), rows, "the file after the failed batch")
    assert_same(view(beside, world), view(kept, world), "against the ledger that never failed")
    beside.tables.conn.close()
    if not same_stays_good:
        led = reopen(led, path)  # its caches hold what the caller's rollback undid
    # the same batch, good this time, then the rest: as if nothing had happened
    for part in (rest[:20], rest[20:]):
        assert led.add(part) == kept.add(part), f"after {failure}: other status changes"
    scratch = from_scratch(net.genesis, es)
    check(led, kept, scratch, world, f"after {failure}, the rest added")
    led = reopen(led, path)
    check(led, kept, scratch, world, f"after {failure}, the rest added, reopened")
    led.tables.conn.close()
