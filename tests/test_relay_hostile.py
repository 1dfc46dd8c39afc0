"""Hostile peers against a real tally-relay: each gets its close reason, nothing stored
changes, and an honest client connected throughout keeps being served (DESIGN §8)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from sync.errors import CloseCode
from sync.messages import PROTOCOL_VERSION, Close, Cursor, Hello, Update, decode, encode
from tests.ledgerkit import Device, Net
from tests.test_relay import (
    Client,
    Relay,
    connected,
    device_client,
    make_network,
    start_relay,
    stored_count,
)
from wallet.crdt import encode_items, item_client_id
from wallet.encoding import Entry, entry_hash, id_text

pytestmark = pytest.mark.slow

MAX_MESSAGE_BYTES = 65_536
QUOTA = 40


class World:
    """One relay for the module, its network, and the devices the honest clients use."""

    def __init__(self, tmp: Path) -> None:
        self.nw = make_network(tmp)
        self.net: Net = self.nw.net
        self.alice = self.net.account(label="alice")
        self.bob = self.net.account(label="bob")
        self.relay: Relay = start_relay(
            tmp, "--network", self.nw.genesis, "--witness-key", self.nw.witness_key,
            "--max-message-bytes", MAX_MESSAGE_BYTES, "--device-rate", 20,
            "--device-burst", 60, "--address-rate", 2000, "--address-burst", 10_000,
            "--quota", QUOTA,
        )
        self.issued = 0

    def stranger(self, label: str) -> Device:
        return self.net.account(label=label)[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World(tmp_path_factory.mktemp("hostile"))

    async def seed() -> None:
        mint = await connected(w.relay.url, device_client(w.net, w.net.mint))
        await mint.send_acked([w.alice[0].open, w.bob[0].open])
        await mint.close()

    asyncio.run(seed())
    yield w
    assert w.relay.stop() == 0


def addressed(raw: bytes) -> tuple[int, str, bytes]:
    """An item for ``raw`` with the key and item id its hash gives."""
    eid = entry_hash(raw)
    return item_client_id(eid), id_text(eid), raw


def update_of(*items: tuple[int, str, bytes]) -> bytes:
    return encode(Update(encode_items(items)))


def _uvar(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


async def read_close(ws: object) -> Close:
    """The protocol's Close from the relay (other messages skipped)."""
    async for data in ws:  # type: ignore[attr-defined]
        msg = decode(data, max_bytes=1 << 30, max_entries=1 << 20)
        if isinstance(msg, Close):
            return msg
    raise AssertionError("the relay hung up without a Close")


async def settled(relay: Relay) -> int:
    """The stored entry count once it stopped moving (votes in flight have landed)."""
    last = stored_count(relay.db)
    while True:
        await asyncio.sleep(0.1)
        now = stored_count(relay.db)
        if now == last:
            return now
        last = now


Attack = Callable[[World, Client], Awaitable[Close]]


def with_honest_clients(w: World, attack: Attack | Callable[[World], Awaitable[Close]], *,
                        handshake: bool = True, attacker: Device | None = None) -> Close:
    """Connect an honest watcher and payer, run the attack, check the honest ones are still
    served and that the attack stored nothing; returns the attacker's Close."""
    net = w.net

    async def go() -> Close:
        watcher = await connected(w.relay.url, device_client(net, w.bob[0]))
        mint = await connected(w.relay.url, device_client(net, net.mint))
        for c in (watcher, mint):
            await c.wait(lambda c=c: c.in_sync, what="catch-up")
        if handshake:
            dev = attacker or w.stranger("mallory")
            bad = await connected(w.relay.url, device_client(net, dev))
            await bad.wait(lambda: bad.in_sync and bad.final(dev.open),
                           what="the attacker's catch-up and its open's vote")
            before = await settled(w.relay)
            closed = await attack(w, bad)  # type: ignore[call-arg]
            await bad.close()
        else:
            before = await settled(w.relay)
            closed = await attack(w)  # type: ignore[call-arg]
        assert stored_count(w.relay.db) == before, "a refused input changed what is stored"
        # the honest clients were served all along, and still are
        w.issued += 1
        iss = net.issue(mint.ledger, w.alice[0], w.issued)
        await mint.send_acked([iss])
        await watcher.wait(lambda: watcher.final(iss), what="the honest issue final")
        assert watcher.closed is None and mint.closed is None
        await watcher.close()
        await mint.close()
        return closed

    return asyncio.run(go())


async def send_raw(bad: Client, data: bytes) -> Close:
    """Send bytes as they are on a handshaken connection; wait for the relay's Close."""
    assert bad.ws is not None
    await bad.ws.send(data)
    await bad.wait(lambda: bad.closed is not None, what="the relay's close")
    assert bad.closed is not None and bad.closed.by_peer
    return Close(bad.closed.code, bad.closed.reason)


def fresh_block(w: World) -> Entry:
    """A signed block the relay does not hold: an open of a new device."""
    return w.stranger("fresh").open


# ------------------------------------------------------------------------------ cases
def test_forged_signature(world: World) -> None:
    def attack(w: World, bad: Client) -> Awaitable[Close]:
        raw = bytearray(fresh_block(w).raw)
        raw[-1] ^= 1
        return send_raw(bad, update_of(addressed(bytes(raw))))

    c = with_honest_clients(world, attack)
    assert c.code == CloseCode.REFUSED and "signature" in c.reason


def test_an_update_that_deletes_an_entry(world: World) -> None:
    def attack(w: World, bad: Client) -> Awaitable[Close]:
        victim = w.alice[0].open
        new = fresh_block(w)
        crafted = encode_items([addressed(new.raw)])[:-1] + bytes(
            (1, *_uvar(item_client_id(victim.id)), 1, 0, 1))
        return send_raw(bad, encode(Update(crafted)))

    c = with_honest_clients(world, attack)
    assert c.code == CloseCode.REFUSED and "delete" in c.reason


def test_an_update_that_overwrites_an_entry(world: World) -> None:
    def attack(w: World, bad: Client) -> Awaitable[Close]:
        held = w.alice[0].open
        new = fresh_block(w)
        return send_raw(bad, update_of((item_client_id(held.id), id_text(held.id), new.raw)))

    c = with_honest_clients(world, attack)
    assert c.code == CloseCode.REFUSED and "key" in c.reason


def test_trailing_bytes(world: World) -> None:
    def attack(w: World, bad: Client) -> Awaitable[Close]:
        update = encode_items([addressed(fresh_block(w).raw)]) + b"\x00"
        return send_raw(bad, encode(Update(update)))

    c = with_honest_clients(world, attack)
    assert c.code == CloseCode.REFUSED and "trailing" in c.reason


def test_forged_item_id(world: World) -> None:
    def attack(w: World, bad: Client) -> Awaitable[Close]:
        e = fresh_block(w)
        return send_raw(bad, update_of((item_client_id(e.id) ^ 4, id_text(e.id), e.raw)))

    c = with_honest_clients(world, attack)
    assert c.code == CloseCode.REFUSED and "item id" in c.reason.replace("_", " ")


def test_garbage_bytes(world: World) -> None:
    def attack(w: World, bad: Client) -> Awaitable[Close]:
        return send_raw(bad, b"\xfe" + os.urandom(200))

    c = with_honest_clients(world, attack)
    assert c.code == CloseCode.PROTOCOL and "unknown message type" in c.reason

    def inside(w: World, bad: Client) -> Awaitable[Close]:
        return send_raw(bad, encode(Update(random.Random(7).randbytes(300))))

    c = with_honest_clients(world, inside)
    assert c.code in (CloseCode.REFUSED, CloseCode.TOO_BIG) and "update refused" in c.reason


def test_a_text_message(world: World) -> None:
    async def attack(w: World) -> Close:
        async with connect(w.relay.url) as ws:
            await ws.send("hello?")
            return await read_close(ws)

    c = with_honest_clients(world, attack, handshake=False)
    assert c.code == CloseCode.PROTOCOL and "text message" in c.reason


def test_garbage_before_the_hello(world: World) -> None:
    async def attack(w: World) -> Close:
        async with connect(w.relay.url) as ws:
            await ws.send(b"\xfe" + os.urandom(63))  # no message type is 254
            return await read_close(ws)

    c = with_honest_clients(world, attack, handshake=False)
    assert c.code == CloseCode.PROTOCOL and "unknown message type 254" in c.reason


def test_oversized_frame(world: World) -> None:
    def attack(w: World, bad: Client) -> Awaitable[Close]:
        return send_raw(bad, encode(Update(os.urandom(MAX_MESSAGE_BYTES + 10))))

    c = with_honest_clients(world, attack)
    assert c.code == CloseCode.TOO_BIG and str(MAX_MESSAGE_BYTES) in c.reason


def test_replayed_hello(world: World) -> None:
    def attack(w: World, bad: Client) -> Awaitable[Close]:
        assert bad.conn is not None
        h = Hello(PROTOCOL_VERSION, 1, w.net.id, bad.key.verify_key.encode(), bad.conn.challenge,
                  open=bad.open_entry)
        return send_raw(bad, encode(h))

    c = with_honest_clients(world, attack)
    assert c.code == CloseCode.PROTOCOL and "hello" in c.reason


def test_a_hello_for_a_key_it_cannot_prove(world: World) -> None:
    async def attack(w: World) -> Close:
        victim = w.alice[0]
        async with connect(w.relay.url) as ws:
            await ws.send(encode(Hello(PROTOCOL_VERSION, 1, w.net.id, victim.pk, os.urandom(32),
                                       open=victim.open.raw)))
            async for data in ws:
                msg = decode(data, max_bytes=1 << 20, max_entries=10)
                if isinstance(msg, Hello):
                    await ws.send(b"\x02" + os.urandom(64) + b"\x00\x00")  # a bogus Proof
                if isinstance(msg, Close):
                    return msg
        raise AssertionError("no close")

    c = with_honest_clients(world, attack, handshake=False)
    assert c.code == CloseCode.BAD_PROOF


def test_unknown_network_and_bad_open(world: World) -> None:
    other = Net(witnesses=0, name="other")

    async def unknown(w: World) -> Close:
        bad = device_client(other, other.mint)
        await bad.connect(w.relay.url)
        await bad.wait(lambda: bad.closed is not None, what="close")
        assert bad.closed is not None
        return Close(bad.closed.code, bad.closed.reason)

    c = with_honest_clients(world, unknown, handshake=False)
    assert c.code == CloseCode.UNKNOWN_NETWORK and "does not serve" in c.reason

    async def bad_open(w: World) -> Close:
        dev = w.stranger("liar")
        c = device_client(w.net, dev)
        c.open_entry = w.alice[0].open.raw  # someone else's open
        await c.connect(w.relay.url)
        await c.wait(lambda: c.closed is not None, what="close")
        assert c.closed is not None
        return Close(c.closed.code, c.closed.reason)

    c = with_honest_clients(world, bad_open, handshake=False)
    assert c.code == CloseCode.BAD_OPEN


def test_a_flood_beyond_the_rate_limit(world: World) -> None:
    async def attack(w: World, bad: Client) -> Close:
        assert bad.ws is not None
        msg = encode(Cursor(b"x" * 24))
        for _ in range(300):
            try:
                await bad.ws.send(msg)
            except Exception:
                break
        await bad.wait(lambda: bad.closed is not None, what="the relay's close")
        assert bad.closed is not None
        return Close(bad.closed.code, bad.closed.reason)

    c = with_honest_clients(world, attack)
    assert c.code == CloseCode.RATE_LIMITED and "messages a second" in c.reason
    assert world.relay.metric('tally_relay_refusals_total{reason="rate_limited"}') >= 1


def test_a_device_over_its_daily_quota(world: World) -> None:
    dev = world.stranger("spammer")
    sink = world.stranger("sink")

    def chain(n: int, start: Entry | None = None) -> list[Entry]:
        out: list[Entry] = []
        at = start or dev.open
        for _ in range(n):
            at = world.net.send(at, dev, sink, 1)  # type: ignore[arg-type]
            out.append(at)
        return out

    first = [dev.open, *chain(QUOTA - 11)]  # within the quota: stored

    async def within() -> None:
        c = await connected(world.relay.url, device_client(world.net, dev))
        await c.send_acked(first[1:])
        assert c.closed is None
        await c.close()

    asyncio.run(within())

    def attack(w: World, bad: Client) -> Awaitable[Close]:
        more = chain(20, first[-1])  # 10 over the quota: refused whole
        bad.port.add_local(first[1:])
        assert bad.conn is not None
        bad.conn.send_entries(more)
        (update,) = [m for m in bad.conn.data_to_send() if m[:1] == b"\x06"]
        return send_raw(bad, update)

    c = with_honest_clients(world, attack, attacker=dev)
    assert c.code == CloseCode.QUOTA and f"quota of {QUOTA}" in c.reason
    assert world.relay.metric('tally_relay_refusals_total{reason="quota"}') == 1
