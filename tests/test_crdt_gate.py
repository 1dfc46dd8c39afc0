"""The ledger Doc and its gate (DESIGN §6): content-addressed items, refusals, collisions."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from pycrdt import Array, Doc, Map

from wallet.crdt import (
    ITEM_ID_BITS,
    ROOT,
    DecodedItem,
    DocCorrupted,
    EntryDigest,
    Gate,
    GateResult,
    LedgerDoc,
    decode_state_vector,
    decode_update,
    encode_items,
    item_client_id,
)
from wallet.encoding import (
    Block,
    Entry,
    Genesis,
    Kind,
    Policy,
    Vote,
    device_signature,
    entry_hash,
    id_text,
    parse_entry,
)
from wallet.errors import EncodingError, GateRefused

REASONS = {
    "oversized",
    "truncated",
    "trailing_bytes",
    "not_map_item",
    "clock",
    "delete",
    "garbage",
}
BIG = 1 << 30


def _key(seed: int) -> SigningKey:
    return SigningKey(bytes([seed]) * 32)


@dataclass
class World:
    """A signed genesis with two witnesses, an account with two devices, and entries."""

    genesis: Genesis
    network: bytes
    witness_keys: list[SigningKey]
    account: SigningKey
    device: SigningKey
    device2: SigningKey
    outsider: SigningKey

    @property
    def witnesses(self) -> frozenset[bytes]:
        return frozenset(self.genesis.witnesses)

    def gate(self, **kw: int) -> Gate:
        return Gate(self.network, self.witnesses, **kw)

    def open(self, device: SigningKey, label: str = "phone") -> Block:
        return Block(
            Kind.OPEN,
            self.network,
            bytes(device.verify_key),
            0,
            account=bytes(self.account.verify_key),
            label=label,
            device_sig=device_signature(device, self.network, bytes(self.account.verify_key),
                                        label),
        ).signed(self.account)

    def send(self, seq: int, amount: int, network: bytes | None = None) -> Block:
        return Block(
            Kind.SEND,
            network or self.network,
            bytes(self.device.verify_key),
            seq,
            prev=entry_hash(seq.to_bytes(8, "big")),
            to_account=bytes(self.account.verify_key),
            to_device=bytes(self.device2.verify_key),
            amount=amount,
        ).signed(self.device)

    def vote(self, block: Block, witness: SigningKey) -> Vote:
        return Vote(
            self.network, block.device, block.seq, block.id, bytes(witness.verify_key)
        ).signed(witness)


def make_world() -> World:
    issuer = _key(1)
    witness_keys = [_key(2), _key(3), _key(4)]
    genesis = Genesis(
        name="test",
        currency="EUR",
        decimals=2,
        issuer=bytes(issuer.verify_key),
        witnesses=tuple(bytes(w.verify_key) for w in witness_keys),
        quorum=2,
        policy=Policy(1000, 5000, 20000, 86400),
    ).signed(issuer)
    return World(
        genesis=genesis,
        network=genesis.network_id,
        witness_keys=witness_keys,
        account=_key(5),
        device=_key(6),
        device2=_key(7),
        outsider=_key(8),
    )


WORLD = make_world()


def make_entries(n: int) -> list[Entry]:
    """``n`` distinct signed entries: opens, sends (with a few forks) and votes."""
    w = WORLD
    out: list[Entry] = [w.open(w.device), w.open(w.device2, "laptop")]
    seq = 1
    while len(out) < n:
        block = w.send(seq, seq)
        out.append(block)
        if seq % 17 == 0:
            out.append(w.send(seq, seq + 1000))  # a fork at (device, seq)
        out.append(w.vote(block, w.witness_keys[seq % 3]))
        seq += 1
    return out[:n]


ENTRIES = make_entries(400)


def items_of(entries: list[Entry], bits: int = ITEM_ID_BITS) -> list[tuple[int, str, bytes]]:
    return [(item_client_id(e.id, bits), id_text(e.id), e.raw) for e in entries]


def snapshot(ledger: LedgerDoc) -> tuple[bytes, dict[int, int], dict[str, bytes]]:
    """The Doc's full update, decoded state vector and map contents.

    The state vector is compared decoded: yrs writes its clients in hash-map order, so
    two Docs with the same items inserted in different orders give different bytes.
    """
    return (
        ledger.doc.get_update(),
        decode_state_vector(ledger.state_vector()),
        {k: bytes(v) for k, v in ledger.entries.items()},
    )


def pycrdt_item(client: int, key: str, value: object, root: str = ROOT) -> bytes:
    doc: Doc = Doc(client_id=client)
    doc.get(root, type=Map)[key] = value
    return doc.get_update()


def receive(ledger: LedgerDoc, gate: Gate, update: bytes) -> GateResult:
    """The sync path: gate, then apply."""
    result = gate.check(update, held=ledger.holds, item_owner=ledger.item_owner)
    ledger.apply_checked(result)
    return result


def refused(ledger: LedgerDoc, gate: Gate, update: bytes, reason: str) -> GateRefused:
    """Assert the update is refused whole with ``reason`` and the Doc is unchanged."""
    before = snapshot(ledger)
    with pytest.raises(GateRefused) as info:
        receive(ledger, gate, update)
    assert info.value.reason == reason, info.value
    assert snapshot(ledger) == before
    assert not ledger.violations
    return info.value


@pytest.fixture
def ledger() -> LedgerDoc:
    """A ledger Doc holding the first 20 entries."""
    doc = LedgerDoc()
    assert doc.insert(ENTRIES[:20]) == []
    return doc


@pytest.fixture
def gate() -> Gate:
    return WORLD.gate()


# --- the encoding ---------------------------------------------------------------------


def test_item_client_id() -> None:
    entry_id = bytes(range(32))
    assert item_client_id(entry_id) == int.from_bytes(entry_id[:8], "big") >> 11
    assert item_client_id(b"\xff" * 32) == 2**53 - 1
    assert item_client_id(b"\xff" * 32, 10) == 1023


def test_encode_items_matches_pycrdt_byte_for_byte() -> None:
    assert encode_items([(12345, "abc", b"\x01\x02\x03")]) == bytes.fromhex(
        "0101b96000280107656e74726965730361626301740301020300"
    )
    assert encode_items([(12345, "abc", b"\x01\x02\x03")]) == pycrdt_item(12345, "abc", b"\1\2\3")
    rng = random.Random(1)
    items = [(rng.getrandbits(53), f"k{i}", rng.randbytes(rng.randrange(300))) for i in range(40)]
    items += [(0, "z", b""), (127, "a", b"x" * 127), (128, "b", b"y" * 128), (2**53 - 1, "m", b"")]
    doc: Doc = Doc()
    doc.get(ROOT, type=Map)
    for client, key, value in items:
        doc.apply_update(pycrdt_item(client, key, value))
    # yrs writes clients in descending order; so does encode_items, whatever the input order
    assert doc.get_update() == encode_items(items)
    assert doc.get_update() == encode_items(reversed(items))


def test_applying_encode_items_gives_the_same_item_as_a_local_write() -> None:
    for entry in ENTRIES[:5]:
        c, k, v = items_of([entry])[0]
        a: Doc = Doc()
        a.get(ROOT, type=Map)
        a.apply_update(encode_items([(c, k, v)]))
        b: Doc = Doc()
        b.get(ROOT, type=Map)
        b.apply_update(pycrdt_item(c, k, v))
        assert a.get_update() == b.get_update() == encode_items([(c, k, v)])
        assert a.get_state() == b.get_state()


def test_encode_items_refuses_bad_clients() -> None:
    with pytest.raises(ValueError):
        encode_items([(2**53, "k", b"")])
    with pytest.raises(ValueError):
        encode_items([(-1, "k", b"")])
    with pytest.raises(ValueError):
        encode_items([(5, "k", b""), (5, "j", b"")])


def test_decode_round_trip() -> None:
    items = items_of(ENTRIES[:30])
    decoded = decode_update(encode_items(items), max_bytes=BIG, max_items=BIG)
    assert decoded == [DecodedItem(c, 0, k, v) for c, k, v in sorted(items, reverse=True)]
    assert decode_update(b"\x00\x00", max_bytes=2, max_items=0) == []


def test_decode_state_vector() -> None:
    doc = LedgerDoc()
    doc.insert(ENTRIES[:10])
    sv = decode_state_vector(doc.state_vector())
    assert sv == {item_client_id(e.id): 1 for e in ENTRIES[:10]}
    for bad in [b"", b"\x01", b"\x01\x05", b"\x00\x00", b"\x02\x05\x01\x05\x01"]:
        with pytest.raises(EncodingError):
            decode_state_vector(bad)
    with pytest.raises(EncodingError):
        doc.update_since(b"\x01\x01\x01\x00")  # pycrdt itself accepts the trailing byte


# --- the gate: what it lets through -----------------------------------------------------


def test_a_peer_docs_update_passes_and_applies(ledger: LedgerDoc, gate: Gate) -> None:
    peer = LedgerDoc()
    peer.insert(ENTRIES[:60])
    result = receive(ledger, gate, peer.update_since(ledger.state_vector()))
    # y-sync only sends what the ledger lacks: nothing dropped, 40 new entries
    assert result.dropped == 0
    assert [e.id for e in result.entries] == [e.id for e in result.applied]
    assert {e.id for e in result.entries} == {e.id for e in ENTRIES[20:60]}
    assert snapshot(ledger) == snapshot(peer)
    assert all(ledger.holds(e.id) for e in ENTRIES[:60])
    assert ledger.item_owner(item_client_id(ENTRIES[30].id)) == ENTRIES[30].id


def test_a_canonical_duplicate_is_dropped_and_the_rest_applied(
    ledger: LedgerDoc, gate: Gate
) -> None:
    update = encode_items(items_of([ENTRIES[3], ENTRIES[25], ENTRIES[7], ENTRIES[26]]))
    before = snapshot(ledger)
    result = gate.check(update, held=ledger.holds, item_owner=ledger.item_owner)
    assert result.dropped == 2
    # in update order: encode_items writes clients in descending order
    in_order = sorted((ENTRIES[25], ENTRIES[26]), key=lambda e: item_client_id(e.id), reverse=True)
    assert [e.id for e in result.entries] == [e.id for e in in_order]
    assert result.outside == []
    assert result.update == encode_items(items_of([ENTRIES[25], ENTRIES[26]]))
    assert ledger.apply_checked(result) == []
    assert snapshot(ledger) != before
    assert ledger.holds(ENTRIES[25].id) and ledger.holds(ENTRIES[26].id)
    assert len(ledger) == 22 and len(ledger.entries) == 22
    # everything held: nothing to apply
    again = gate.check(update, held=ledger.holds, item_owner=ledger.item_owner)
    assert again.update is None and again.entries == [] and again.dropped == 4


def test_entries_held_outside_the_doc_are_dropped_too(ledger: LedgerDoc, gate: Gate) -> None:
    store = {e.id for e in ENTRIES[:30]}  # the store holds 20..29 outside the Doc
    update = encode_items(items_of(ENTRIES[25:35]))
    result = gate.check(update, held=store.__contains__, item_owner=ledger.item_owner)
    assert result.dropped == 5
    assert {e.id for e in result.entries} == {e.id for e in ENTRIES[30:35]}


def test_apply_checked_refilters_when_the_doc_changed_since_the_check(
    ledger: LedgerDoc, gate: Gate
) -> None:
    update = encode_items(items_of(ENTRIES[20:30]))
    result = gate.check(update, held=ledger.holds, item_owner=ledger.item_owner)
    ledger.insert(ENTRIES[22:24])  # arrived by another path in between
    assert ledger.apply_checked(result) == []
    assert all(ledger.holds(e.id) for e in ENTRIES[:30])
    assert not ledger.violations


# --- the gate: what it refuses ----------------------------------------------------------


def test_refuses_a_delete(ledger: LedgerDoc, gate: Gate) -> None:
    victim = ENTRIES[4]
    other: Doc = Doc()
    m = other.get(ROOT, type=Map)
    other.apply_update(ledger.doc.get_update())
    del m[id_text(victim.id)]
    delete_only = other.get_update(ledger.state_vector())
    assert delete_only[0] == 0  # no structs, only a delete set
    refused(ledger, gate, delete_only, "delete")
    # a canonical item followed by a delete set
    crafted = encode_items(items_of([ENTRIES[30]]))[:-1] + bytes(
        (1, *_uvar(item_client_id(victim.id)), 1, 0, 1)
    )
    refused(ledger, gate, crafted, "delete")


def _uvar(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def head(client: int) -> bytes:
    """An update's start: one client with one struct at clock 0."""
    return b"\x01\x01" + _uvar(client) + b"\x00"


def string(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return _uvar(len(raw)) + raw


def addressed(raw: bytes) -> tuple[int, str, bytes]:
    """An item for ``raw`` with the key and item id its hash gives."""
    entry_id = entry_hash(raw)
    return item_client_id(entry_id), id_text(entry_id), raw


def test_refuses_an_overwrite_of_a_held_key(ledger: LedgerDoc, gate: Gate) -> None:
    held = ENTRIES[5]
    key = id_text(held.id)
    client = item_client_id(held.id)
    newcomer = ENTRIES[40]
    # different bytes under the held key, with the held item id or the newcomer's
    refused(ledger, gate, encode_items([(client, key, newcomer.raw)]), "key_mismatch")
    newcomer_client = item_client_id(newcomer.id)
    refused(ledger, gate, encode_items([(newcomer_client, key, newcomer.raw)]), "key_mismatch")
    # identical bytes under the held key, from another item id (above and below it)
    for other_client in (client ^ 1, client - 1, client + 1):
        refused(ledger, gate, encode_items([(other_client, key, held.raw)]), "item_id_mismatch")
    # the real update pycrdt makes for such an overwrite: the new item has the held one
    # as its origin, and the delete set deletes the held one
    doc: Doc = Doc(client_id=client ^ 1)
    doc.apply_update(ledger.doc.get_update())
    doc.get(ROOT, type=Map)[key] = held.raw
    refused(ledger, gate, doc.get_update(ledger.state_vector()), "not_map_item")


def test_refuses_trailing_bytes(ledger: LedgerDoc, gate: Gate) -> None:
    update = encode_items(items_of(ENTRIES[30:33]))
    for tail in (b"\x00", b"\x00\x00", b"\xff", ENTRIES[0].raw):
        refused(ledger, gate, update + tail, "trailing_bytes")


def test_refuses_garbage(ledger: LedgerDoc, gate: Gate) -> None:
    good = encode_items(items_of([ENTRIES[30]]))
    for garbage in [
        b"\xff" * 11,  # a varuint longer than 10 bytes
        b"\x80\x00\x00",  # a non-minimal varuint
        b"\x00\x80\x00",
        b"\x01\x00",  # a client section with no struct
        encode_items([(1, "x", b"")]).replace(b"\x01x", b"\x01\xff"),  # a key not UTF-8
        b"\x01\x01" + _uvar(2**53) + good[9:],  # a client id of 2^53
    ]:
        refused(ledger, gate, garbage, "garbage")


def test_refuses_every_prefix_as_truncated(ledger: LedgerDoc, gate: Gate) -> None:
    update = encode_items(items_of(ENTRIES[30:33]))
    for n in range(len(update)):
        refused(ledger, gate, update[:n], "truncated")


def test_refuses_a_clock_other_than_zero(ledger: LedgerDoc, gate: Gate) -> None:
    # pycrdt's own update for one client writing two entries: 2 structs, clocks 0 and 1
    a, b = ENTRIES[30], ENTRIES[31]
    doc: Doc = Doc(client_id=item_client_id(a.id))
    m = doc.get(ROOT, type=Map)
    m[id_text(a.id)] = a.raw
    m[id_text(b.id)] = b.raw
    refused(ledger, gate, doc.get_update(), "clock")
    # only the second item (clock 1)
    state = Doc()
    state.apply_update(pycrdt_item(item_client_id(a.id), id_text(a.id), a.raw))
    refused(ledger, gate, doc.get_update(state.get_state()), "clock")
    # a crafted clock 1
    c = item_client_id(a.id)
    one = encode_items(items_of([a]))
    head = b"\x01\x01" + _uvar(c)
    assert one.startswith(head + b"\x00")
    refused(ledger, gate, head + b"\x01" + one[len(head) + 1 :], "clock")
    # one client in two sections
    section = one[1:-1]
    refused(ledger, gate, b"\x02" + section + section + b"\x00", "clock")


def test_refuses_an_item_with_an_origin(ledger: LedgerDoc, gate: Gate) -> None:
    # a real one: a second write of a key by another client has the first as its origin
    a = ENTRIES[30]
    base: Doc = Doc(client_id=item_client_id(a.id))
    base.get(ROOT, type=Map)[id_text(a.id)] = a.raw
    later: Doc = Doc(client_id=99)
    later.apply_update(base.get_update())
    later.get(ROOT, type=Map)[id_text(a.id)] = a.raw
    update = later.get_update(base.get_state())
    assert update[4] & 0x80  # info byte: origin present
    refused(ledger, gate, update, "not_map_item")
    # a crafted one: info 0xa8, origin (7, 0), then content (no parent info is written)
    c, _, v = items_of([ENTRIES[31]])[0]
    crafted = b"\x01\x01" + _uvar(c) + b"\x00\xa8\x07\x00\x01\x74" + _uvar(len(v)) + v + b"\x00"
    refused(ledger, gate, crafted, "not_map_item")
    # a right origin
    crafted = b"\x01\x01" + _uvar(c) + b"\x00\x68\x07\x00\x01\x74" + _uvar(len(v)) + v + b"\x00"
    refused(ledger, gate, crafted, "not_map_item")


def test_refuses_other_structs_and_content(ledger: LedgerDoc, gate: Gate) -> None:
    e = ENTRIES[30]
    c, k, v = items_of([e])[0]
    cases = [
        pycrdt_item(c, k, "a string"),  # ContentAny holding a string
        pycrdt_item(c, k, [v]),  # ContentAny holding an array
        pycrdt_item(c, k, Map()),  # ContentType
        pycrdt_item(c, k, v, root="other"),  # another root
        b"\x01\x01" + _uvar(c) + b"\x00\x00\x01\x00",  # GC
        b"\x01\x01" + _uvar(c) + b"\x00\x0a\x01\x00",  # Skip
        # ContentBinary
        head(c) + b"\x23\x01\x07entries" + string(k) + string(v) + b"\x00",
        # parent given by an item id (5, 0)
        head(c) + b"\x28\x00\x05\x00" + string(k) + b"\x01\x74" + string(v) + b"\x00",
        # a ContentAny of two values
        head(c) + b"\x28\x01\x07entries" + string(k) + b"\x02\x74" + string(v) + b"\x74\x00\x00",
    ]
    arr: Doc = Doc(client_id=c)
    arr.get(ROOT, type=Array).append(v)  # an item with no map key
    cases.append(arr.get_update())
    for update in cases:
        refused(ledger, gate, update, "not_map_item")


def test_refuses_a_key_that_is_not_the_values_id(ledger: LedgerDoc, gate: Gate) -> None:
    e = ENTRIES[30]
    c = item_client_id(e.id)
    wrong = id_text(ENTRIES[31].id)
    exc = refused(ledger, gate, encode_items([(c, wrong, e.raw)]), "key_mismatch")
    assert exc.entry_id == id_text(e.id)
    refused(ledger, gate, encode_items([(c, "short", e.raw)]), "key_mismatch")
    # a good item does not carry a bad one through
    mixed = [*items_of(ENTRIES[32:35]), (c, wrong, e.raw)]
    refused(ledger, gate, encode_items(mixed), "key_mismatch")


def test_refuses_an_item_id_that_is_not_the_values(ledger: LedgerDoc, gate: Gate) -> None:
    e = ENTRIES[30]
    refused(
        ledger,
        gate,
        encode_items([(item_client_id(e.id) ^ 4, id_text(e.id), e.raw)]),
        "item_id_mismatch",
    )
    # a gate with a narrower slice than the sender's
    narrow = WORLD.gate(item_bits=10)
    refused(ledger, narrow, encode_items(items_of([e])), "item_id_mismatch")


def test_refuses_a_forged_signature(ledger: LedgerDoc, gate: Gate) -> None:
    e = ENTRIES[30]
    raw = bytearray(e.raw)
    raw[-1] ^= 1  # flip a bit of the signature
    forged = bytes(raw)
    update = encode_items([addressed(forged)])
    exc = refused(ledger, gate, update, "bad_entry")
    assert "signature" in exc.detail
    assert exc.entry_id == id_text(entry_hash(forged))
    # and bytes that are no entry at all, correctly addressed
    junk = b"TS\x01\x02" + bytes(100)
    refused(ledger, gate, encode_items([addressed(junk)]), "bad_entry")


def test_refuses_a_vote_by_a_key_outside_the_genesis(ledger: LedgerDoc, gate: Gate) -> None:
    block = ENTRIES[2]
    assert isinstance(block, Block)
    vote = WORLD.vote(block, WORLD.outsider)
    exc = refused(ledger, gate, encode_items(items_of([vote])), "unknown_witness")
    assert exc.entry_id == id_text(vote.id)
    # and one by a genesis witness passes
    receive(ledger, gate, encode_items(items_of([WORLD.vote(block, WORLD.witness_keys[0])])))


def test_refuses_an_entry_of_another_network(ledger: LedgerDoc, gate: Gate) -> None:
    stranger = WORLD.send(1, 5, network=b"\x42" * 32)
    refused(ledger, gate, encode_items(items_of([stranger])), "wrong_network")


def test_refuses_oversized_updates(ledger: LedgerDoc) -> None:
    update = encode_items(items_of(ENTRIES[30:40]))
    refused(ledger, WORLD.gate(max_update_bytes=len(update) - 1), update, "oversized")
    refused(ledger, WORLD.gate(max_entries=9), update, "oversized")
    receive(ledger, WORLD.gate(max_update_bytes=len(update), max_entries=10), update)
    # a claimed count over the limit is refused before anything is read
    refused(ledger, WORLD.gate(max_entries=20_000), b"\xff\xff\xff\x0f", "oversized")


# --- replicas -----------------------------------------------------------------------------


def _batches(entries: list[Entry], rng: random.Random) -> list[list[Entry]]:
    out, i = [], 0
    while i < len(entries):
        n = rng.randint(1, 40)
        out.append(entries[i : i + n])
        i += n
    return out


def test_replicas_inserting_in_different_orders_are_identical() -> None:
    rng = random.Random(7)
    entries = list(ENTRIES)
    replicas = []
    for _ in range(3):
        order = entries[:]
        rng.shuffle(order)
        replica = LedgerDoc()
        digest = EntryDigest()
        for batch in _batches(order, rng):
            new = [e for e in batch if not replica.holds(e.id)]
            assert replica.insert(batch + batch[:3]) == []  # repeats inside a batch are skipped
            for e in dict.fromkeys(x.id for x in new):
                digest.add(e)
        replicas.append((replica, digest))
    (a, da), (b, db), (c, dc) = replicas
    assert snapshot(a) == snapshot(b) == snapshot(c)
    assert da == db == dc == EntryDigest(e.id for e in entries)
    assert len(a.entries) == len(entries)
    assert not a.violations


def test_entry_digest() -> None:
    ids = [e.id for e in ENTRIES[:50]]
    d = EntryDigest(ids)
    assert d == EntryDigest(reversed(ids))
    assert d.value == (sum(int.from_bytes(i, "big") for i in ids) % 2**256).to_bytes(32, "big")
    assert d == d.value
    assert d != EntryDigest(ids[:-1])
    wrap = EntryDigest([b"\xff" * 32, b"\x00" * 31 + b"\x02"])
    assert wrap.value == b"\x00" * 31 + b"\x01"
    with pytest.raises(ValueError):
        d.add(b"short")


class Replica:
    """A ledger Doc plus the entries it keeps outside it: the store, in miniature."""

    def __init__(self, bits: int) -> None:
        self.doc = LedgerDoc(item_bits=bits)
        self.gate = WORLD.gate(item_bits=bits)
        self.outside: dict[bytes, Entry] = {}
        self.digest = EntryDigest()

    def held(self, entry_id: bytes) -> bool:
        return self.doc.holds(entry_id) or entry_id in self.outside

    def ids(self) -> set[bytes]:
        return set(self.doc.entry_ids()) | set(self.outside)

    def _keep_outside(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.id not in self.outside:
                self.outside[e.id] = e

    def insert(self, entries: list[Entry]) -> None:
        new = [e for e in dict((e.id, e) for e in entries).values() if not self.held(e.id)]
        self._keep_outside(self.doc.insert(new))
        for e in new:
            self.digest.add(e.id)

    def receive(self, update: bytes) -> None:
        result = self.gate.check(update, held=self.held, item_owner=self.doc.item_owner)
        self._keep_outside(result.outside + self.doc.apply_checked(result))
        for e in result.entries:
            self.digest.add(e.id)

    def entry(self, entry_id: bytes) -> Entry:
        if entry_id in self.outside:
            return self.outside[entry_id]
        return parse_entry(bytes(self.doc.entries[id_text(entry_id)]))

    def sync_from(self, other: Replica) -> None:
        """y-sync one way, then reconcile by digest and raw entries."""
        self.receive(other.doc.update_since(self.doc.state_vector()))
        if self.digest != other.digest:
            missing = other.ids() - self.ids()
            self.insert([other.entry(i) for i in sorted(missing)])


def test_narrow_item_ids_collide_and_nothing_is_lost() -> None:
    bits = 10
    entries = ENTRIES[:300]
    clients = [item_client_id(e.id, bits) for e in entries]
    assert len(set(clients)) < len(clients) - 20  # collisions are common
    rng = random.Random(3)
    a, b = Replica(bits), Replica(bits)
    order_b = entries[:]
    rng.shuffle(order_b)
    for batch in _batches(entries, rng):
        a.insert(batch)
    for batch in _batches(order_b, rng):
        b.insert(batch)
    every = {e.id for e in entries}
    for r in (a, b):
        assert r.outside, "colliding entries live outside the Doc"
        assert r.ids() == every
        assert not set(r.doc.entry_ids()) & set(r.outside)
        assert len(r.doc.entries) == len(r.doc) == len(set(clients))
        assert not r.doc.violations
    assert a.digest == b.digest == EntryDigest(every)
    # a third replica catches up through the gate from a, then from b
    c = Replica(bits)
    c.receive(a.doc.update_since(c.doc.state_vector()))
    assert snapshot(c.doc) == snapshot(a.doc)
    # y-sync from b carries nothing: every item id b holds, c holds too (for a's entry)
    assert decode_update(b.doc.update_since(c.doc.state_vector()), max_bytes=BIG, max_items=1) == []
    assert c.digest != b.digest
    c.sync_from(b)  # so the digest check and reconciliation bring the rest
    assert c.ids() == every and c.digest == a.digest
    # and a replica syncing from b while holding part of a's set routes the rest outside
    d = Replica(bits)
    d.insert(entries[:100])
    d.sync_from(b)
    d.sync_from(a)
    assert d.ids() == every and d.digest == a.digest
    # every fork shows in every replica: both sides of each forked slot are held
    forks: dict[tuple[bytes, int], set[bytes]] = {}
    for e in entries:
        if isinstance(e, Block):
            forks.setdefault((e.device, e.seq), set()).add(e.id)
    forked = [ids for ids in forks.values() if len(ids) > 1]
    assert forked
    for r in (a, b, c, d):
        for ids in forked:
            assert ids <= r.ids()


def test_gate_routes_an_item_id_held_by_another_entry_outside() -> None:
    bits = 10
    by_client: dict[int, list[Entry]] = {}
    for e in ENTRIES:
        by_client.setdefault(item_client_id(e.id, bits), []).append(e)
    first, second = next(v for v in by_client.values() if len(v) >= 2)[:2]
    r = Replica(bits)
    r.insert([first])
    result = r.gate.check(
        encode_items(items_of([second], bits)), held=r.held, item_owner=r.doc.item_owner
    )
    assert [e.id for e in result.outside] == [second.id]
    assert result.entries == result.outside and result.update is None
    # LedgerDoc.insert routes it the same way
    assert [e.id for e in r.doc.insert([second])] == [second.id]


# --- pycrdt behaviour the gate exists for, and the backstop -------------------------------


def test_yrs_silently_ignores_a_reused_item_id() -> None:
    ledger = LedgerDoc()
    a, b = ENTRIES[30], ENTRIES[31]
    ledger.insert([a])
    before = snapshot(ledger)
    # an item with a's item id but b's key and bytes: yrs sees clock 0 as already
    # integrated and drops it without a word (which is why sync also compares digests)
    raw: Doc = Doc()
    raw.apply_update(ledger.doc.get_update())
    raw.apply_update(encode_items([(item_client_id(a.id), id_text(b.id), b.raw)]))
    assert raw.get_update() == before[0]
    assert {k: bytes(v) for k, v in raw.get(ROOT, type=Map).items()} == before[2]


def test_audit_catches_a_raw_overwrite() -> None:
    ledger = LedgerDoc()
    held = ENTRIES[30]
    ledger.insert([held])
    ledger.audit()  # a pure set passes
    key = id_text(held.id)
    client = item_client_id(held.id)
    # identical bytes written concurrently under a higher item id, applied bypassing the
    # gate: yrs integrates the new item, makes it the key's value and deletes the held one
    ledger.doc.apply_update(pycrdt_item(client + 1, key, held.raw))
    with pytest.raises(DocCorrupted, match=f"item id {client + 1} holds no indexed entry"):
        ledger.audit()
    assert ledger.corrupted
    # from a lower item id: the new item is integrated already deleted (a tombstone)
    lower = LedgerDoc()
    lower.insert([held])
    lower.doc.apply_update(pycrdt_item(client - 1, key, held.raw))
    with pytest.raises(DocCorrupted, match=f"item id {client - 1}"):
        lower.audit()
    # a local write is caught too
    fresh = LedgerDoc()
    fresh.entries["x"] = b"1"
    with pytest.raises(DocCorrupted, match="the map holds 1 keys, the index 0"):
        fresh.audit()
    assert fresh.corrupted


def test_audit_passes_after_many_inserts() -> None:
    ledger = LedgerDoc(item_bits=6)  # collisions: some entries go outside
    outside = ledger.insert(ENTRIES[:40])
    assert outside and len(ledger) + len(outside) == 40
    ledger.audit()
    assert not ledger.violations


def test_backstop_catches_a_silently_dropped_insert() -> None:
    ledger = LedgerDoc()
    a, b = ENTRIES[30], ENTRIES[31]
    ledger.insert([a])
    # forge the index so the ledger believes the item id is free, then insert b onto it
    ledger._owner.clear()
    ledger._client.clear()
    fake = GateResult(
        update=encode_items([(item_client_id(a.id), id_text(b.id), b.raw)]),
        entries=[b],
        outside=[],
        dropped=0,
        applied=[b],
    )
    with pytest.raises(DocCorrupted):
        ledger.apply_checked(fake)
    assert ledger.corrupted


# --- fuzz -------------------------------------------------------------------------------


VALID = encode_items(items_of(ENTRIES[:4]))


def _decode_only_refuses(data: bytes) -> None:
    try:
        items = decode_update(data, max_bytes=4096, max_items=64)
    except GateRefused as exc:
        assert exc.reason in REASONS
    else:
        assert all(isinstance(i, DecodedItem) for i in items)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_decode_arbitrary_bytes(data: bytes) -> None:
    _decode_only_refuses(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "splice"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[i : i + draw(st.integers(1, 4))]
        elif op == "splice":
            j = draw(st.integers(0, len(VALID)))
            data[i:] = VALID[j:]
    return bytes(data)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_decode_mutated_updates(data: bytes) -> None:
    _decode_only_refuses(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_gate_mutated_updates(data: bytes) -> None:
    ledger = LedgerDoc()
    before = snapshot(ledger)
    try:
        result = WORLD.gate().check(data, held=ledger.holds, item_owner=ledger.item_owner)
    except GateRefused:
        assert snapshot(ledger) == before
    else:
        ledger.apply_checked(result)
        assert not ledger.violations
