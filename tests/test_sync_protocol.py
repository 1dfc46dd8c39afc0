"""The sans-I/O sync protocol, all in memory: messages in, events out (DESIGN §6, §8).

Two ``Connection``s over two ``MemoryPort``s, pumped by hand (no sockets): catch-up by
bulk entries, y-sync, cursor resume, live updates, votes, 10-bit item-id collisions and
random interleavings; then hostile sequences, each of which must end in a ``Close`` with
the right code and a reason naming the problem, with nothing stored on the victim.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable, Iterable
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from pycrdt import Doc, Map

from sync.errors import CloseCode, ProtocolViolation
from sync.messages import (
    PROTOCOL_VERSION,
    ROLE_DEVICE,
    ROLE_NODE,
    Ack,
    Buckets,
    Close,
    Cursor,
    Digest,
    Entries,
    Fetch,
    Hello,
    Ids,
    Proof,
    SyncStep2,
    Update,
    Want,
    decode,
    encode,
)
from sync.port import MemoryPort
from sync.protocol import (
    Acked,
    CaughtUp,
    Closed,
    Connection,
    CursorReceived,
    InSync,
    Ready,
    Received,
    proof_payload,
)
from tests.ledgerkit import Net, keygen
from tests.test_replica_convergence import scenario
from wallet.crdt import ROOT, decode_state_vector, encode_items, item_client_id
from wallet.encoding import Block, Kind, Vote, id_text, sign_message
from wallet.ledger import Ledger

TYPE = {1: "Hello", 2: "Proof", 3: "Want", 4: "Entries", 5: "SyncStep2", 6: "Update",
        7: "Digest", 8: "Buckets", 9: "Ids", 10: "Fetch", 11: "Cursor", 12: "Ack", 127: "Close"}


# ------------------------------------------------------------------ harness
class Pipe:
    """Two connections and the messages in flight each way (FIFO per direction)."""

    def __init__(self, client: Connection, server: Connection, *,
                 tamper: Callable[[str, bytes], bytes] | None = None) -> None:
        self.client, self.server = client, server
        self.tamper = tamper or (lambda to, data: data)
        self.to_server: deque[bytes] = deque()
        self.to_client: deque[bytes] = deque()
        self.sent = {"client": [], "server": []}  # type: dict[str, list[bytes]]
        self.events = {"client": [], "server": []}  # type: dict[str, list[object]]

    def _collect(self) -> None:
        for side, conn, q in (("client", self.client, self.to_server),
                              ("server", self.server, self.to_client)):
            out = conn.data_to_send()
            if not out and not q and conn.streaming:
                # a transport with nothing left to write asks the catch-up for more
                conn.next_window()
                out = conn.data_to_send()
            q.extend(out)
            self.sent[side].extend(out)
        self.events["client"] += self.client.events_received()
        self.events["server"] += self.server.events_received()

    def step(self, rng: random.Random) -> bool:
        """Deliver one message in a random direction; False when none is in flight."""
        self._collect()
        queues = [q for q in (self.to_server, self.to_client) if q]
        if not queues:
            return False
        q = rng.choice(queues)
        to = "server" if q is self.to_server else "client"
        getattr(self, to).receive_data(self.tamper(to, q.popleft()))
        self._collect()
        return True

    def run(self, rng: random.Random | None = None, limit: int = 100_000) -> Pipe:
        """Deliver until nothing is in flight; one message at a time, in a random
        direction when ``rng`` is given, else alternating whole batches."""
        self._collect()
        for _ in range(limit):
            if not self.to_server and not self.to_client:
                return self
            if rng is None:
                while self.to_server:
                    self.server.receive_data(self.tamper("server", self.to_server.popleft()))
                self._collect()
                while self.to_client:
                    self.client.receive_data(self.tamper("client", self.to_client.popleft()))
            else:
                queues = [q for q in (self.to_server, self.to_client) if q]
                q = rng.choice(queues)
                to = "server" if q is self.to_server else "client"
                getattr(self, to).receive_data(self.tamper(to, q.popleft()))
            self._collect()
        raise AssertionError("the conversation did not settle")

    def kinds(self, side: str) -> list[str]:
        return [TYPE[m[0]] for m in self.sent[side]]

    def bytes_sent(self, side: str) -> int:
        return sum(len(m) for m in self.sent[side])

    def of(self, side: str, cls: type) -> list:
        return [e for e in self.events[side] if isinstance(e, cls)]


def connect(
    client_port: MemoryPort,
    server_port: MemoryPort,
    *,
    cursor: bytes = b"",
    server_cursor: bytes = b"",
    rng: random.Random | None = None,
) -> Pipe:
    """A conversation to its end; ``cursor`` is what the server gave the client last
    time, ``server_cursor`` what the client gave the server (a server that remembers
    its peers' cursors, as the till's listener does, passes it)."""
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=client_port,
                   cursor=cursor)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, port=server_port,
                   cursor=server_cursor)
    c.initiate()
    return Pipe(c, s).run(rng)


def assert_in_sync(pipe: Pipe, a: MemoryPort, b: MemoryPort) -> None:
    assert pipe.of("client", InSync) and pipe.of("server", InSync), pipe.events
    assert not pipe.of("client", Closed) and not pipe.of("server", Closed), pipe.events
    assert a.replica.ids() == b.replica.ids()
    assert a.digest() == b.digest()
    assert dict(a.replica.ledger.status) == dict(b.replica.ledger.status)


@cache
def world(seed: int = 1) -> tuple[Net, tuple[Block | Vote, ...]]:
    net, made = scenario(seed)
    return net, tuple(made)


def port_with(net: Net, entries: Iterable[Block | Vote], *, opens: bool = True,
              bits: int = 53) -> MemoryPort:
    return MemoryPort(net.ledger(list(entries), opens=opens), item_bits=bits)


def snapshot(port: MemoryPort) -> tuple[int, bytes, frozenset[bytes], object]:
    """What a victim holds: count, digest, ids and its Doc's state (decoded: yrs writes
    a state vector's clients in hash-map order)."""
    doc = frozenset(decode_state_vector(port.state_vector()).items())
    return port.count(), port.digest(), frozenset(port.replica.ids()), doc


# ------------------------------------------------------------------ catch-up
def test_empty_client_catches_up_by_bulk_entries() -> None:
    net, made = world()
    server = port_with(net, made)
    client = port_with(net, (), opens=False)
    assert client.count() == 0
    pipe = connect(client, server)
    assert_in_sync(pipe, client, server)
    assert "Entries" in pipe.kinds("server") and "SyncStep2" not in pipe.kinds("server")
    got = pipe.of("client", Received)
    assert {h.how for h in got} == {"entries"}
    assert sum(len(h.entries) for h in got) == server.count()
    assert pipe.of("client", CaughtUp) and pipe.of("client", Ready)
    assert "Buckets" not in pipe.kinds("client"), "nothing to reconcile"
    assert server.replica.ledger.fraud_proofs() and client.replica.ledger.fraud_proofs()


def test_overlapping_stores_use_y_sync_both_ways() -> None:
    net, made = world()
    rng = random.Random(5)
    a_part = [e for e in made if rng.random() < 0.6]
    b_part = [e for e in made if e not in a_part or rng.random() < 0.3]
    client, server = port_with(net, a_part), port_with(net, b_part)
    pipe = connect(client, server)
    assert_in_sync(pipe, client, server)
    assert "SyncStep2" in pipe.kinds("server") and "SyncStep2" in pipe.kinds("client")
    assert {h.how for h in pipe.of("client", Received)} == {"sync"}
    assert client.count() == len(made) + len(net.opens)


class ChunkCountingPort(MemoryPort):
    """A MemoryPort whose catch-up is read ten entries a chunk, counting the reads."""

    chunks_read = 0

    def entries_since(self, cursor: bytes):  # type: ignore[override]
        inner = super().entries_since(cursor)
        if inner is None:
            return None

        def tens():
            for chunk in inner:
                for i in range(0, len(chunk), 10):
                    self.chunks_read += 1
                    yield chunk[i : i + 10]

        return tens()


def test_a_cold_catch_up_streams_from_the_store_a_window_at_a_time() -> None:
    net, made = world()
    server_port = ChunkCountingPort(net.ledger(list(made)))
    client_port = port_with(net, (), opens=False)
    total_chunks = -(-server_port.count() // 10)
    window = 2048
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=client_port)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, port=server_port,
                   catch_up_window_bytes=window)
    handed: list[tuple[int, bool, int]] = []  # (bytes, streaming after, chunks read)
    take = s.data_to_send

    def data_to_send() -> list[bytes]:
        out = take()
        handed.append((sum(map(len, out)), s.streaming, server_port.chunks_read))
        return out

    s.data_to_send = data_to_send  # type: ignore[method-assign]
    c.initiate()
    pipe = Pipe(c, s).run()
    assert_in_sync(pipe, client_port, server_port)
    assert client_port.count() == server_port.count() > 100
    entries = [decode(m, max_bytes=1 << 20, max_entries=1000) for m in pipe.sent["server"]
               if m[0] == 4]
    biggest = max(len(m) for m in pipe.sent["server"] if m[0] == 4)
    streamed = [h for h in handed if h[1]]
    assert len(streamed) >= 3, "the catch-up went out in windows"
    assert all(b <= window + biggest for b, _, _ in handed), "one call, one window"
    assert streamed[0][2] < total_chunks / 2, "the store was read as the socket drained"
    assert [e.last for e in entries].count(True) == 1 and entries[-1].last
    assert entries[-1].cursor == pipe.of("client", CaughtUp)[0].cursor != b""
    kinds = pipe.kinds("server")
    last_entries = max(i for i, k in enumerate(kinds) if k == "Entries")
    assert kinds.index("Digest") > last_entries, "what the server says next waits behind"
    assert not s.streaming and not c.streaming


class BatchCountingPort(MemoryPort):
    """A MemoryPort that records how many entries each ``add_raw`` merged."""

    def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.batches: list[int] = []

    def add_raw(self, bodies: list[bytes]):  # type: ignore[no-untyped-def,override]
        self.batches.append(len(bodies))
        return super().add_raw(bodies)


def test_a_client_merges_a_catch_up_in_batches_gathered_from_its_messages() -> None:
    net, made = world()
    server_port = port_with(net, made)
    client_port = BatchCountingPort(net.ledger([], opens=False))
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=client_port,
                   catch_up_batch_entries=100)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, port=server_port,
                   max_message_bytes=16 << 10)  # so the catch-up takes many messages
    c.initiate()
    pipe = Pipe(c, s).run()
    assert_in_sync(pipe, client_port, server_port)
    messages = [m for m in pipe.sent["server"] if m[0] == 4]
    held = server_port.count()
    assert len(messages) > held // 100 + 1, "the catch-up came in many small messages"
    assert sum(client_port.batches) == held
    assert all(n >= 100 for n in client_port.batches[:-1]), client_port.batches
    assert len(client_port.batches) <= held // 100 + 1
    assert len(pipe.of("client", CaughtUp)) == 1


def test_what_arrives_while_a_catch_up_streams_reads_no_more_of_it() -> None:
    """Only ``next_window`` reads the stream on: a peer that keeps talking (here, live
    entries the server acknowledges one by one) cannot make the catch-up pile up."""
    net, made = world()
    server_port = ChunkCountingPort(net.ledger(list(made)))
    client_port = port_with(net, (), opens=False)
    window = 2048
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=client_port)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, port=server_port,
                   catch_up_window_bytes=window)
    c.initiate()
    for _ in range(4):  # hello, proof, the Wants: the stream has begun
        for m in c.data_to_send():
            s.receive_data(m)
        for m in s.data_to_send():
            c.receive_data(m)
    assert s.streaming
    handed = 0
    for i in range(40):
        new = net.account(label=f"late{i}").devices[0].open
        client_port.add_local([new])
        c.send_entries([new])
        for m in c.data_to_send():
            s.receive_data(m)
        handed += sum(map(len, s.data_to_send()))
    assert s.streaming, "the catch-up waits for next_window"
    assert handed < 40 * 512, f"{handed} bytes handed out without a next_window"
    while s.streaming:
        s.next_window()
        for m in s.data_to_send():
            c.receive_data(m)
    pipe = Pipe(c, s).run()
    assert_in_sync(pipe, client_port, server_port)


def test_resume_from_a_cursor_sends_only_the_tail() -> None:
    net, made = world()
    server = port_with(net, made)
    client = port_with(net, (), opens=False)
    first = connect(client, server)
    assert_in_sync(first, client, server)
    cursor = first.of("client", CursorReceived)[-1].cursor
    server_cursor = first.of("server", CursorReceived)[-1].cursor
    # The server learns a few entries; the client comes back with its cursor.
    led = Ledger(net.genesis)
    led.add(made)
    led.add(net.opens)
    dev = net.accounts[1][0]
    new: list[Block | Vote] = []
    for _ in range(3):
        s = net.send(led, dev, net.accounts[2][0], 1)
        led.add([s, *net.votes(s)])
        new += [s, *net.votes(s)]
    server.add_local(new)
    again = connect(client, server, cursor=cursor, server_cursor=server_cursor)
    assert_in_sync(again, client, server)
    got = [e.id for h in again.of("client", Received) for e in h.entries]
    assert sorted(got) == sorted(e.id for e in new)
    want = decode(again.sent["client"][2], max_bytes=1 << 20, max_entries=10)
    assert isinstance(want, Want) and want.cursor == cursor and want.state_vector == b""
    tail = sum(len(e.raw) + 2 for e in new)
    assert again.bytes_sent("server") < tail + 1000, "hello, proof, want, the tail, digest"
    assert again.bytes_sent("server") * 20 < first.bytes_sent("server")
    assert again.bytes_sent("client") < 1000
    # without the server's cursor its Want carries its state vector instead
    third = connect(client, server, cursor=again.of("client", CursorReceived)[-1].cursor)
    assert_in_sync(third, client, server)
    assert third.bytes_sent("server") > 8 * server.count()
    # The state vector the cursor replaced would have cost ~9 bytes an entry.
    assert len(client.state_vector()) > 5 * client.count()


def test_cursor_from_the_first_conversation_covers_what_the_client_sent() -> None:
    """Entries the client brought in the first conversation do not come back."""
    net, made = world()
    half = len(made) // 2
    server, client = port_with(net, made[:half]), port_with(net, made[half:])
    first = connect(client, server)
    assert_in_sync(first, client, server)
    again = connect(client, server, cursor=first.of("client", CursorReceived)[-1].cursor,
                    server_cursor=first.of("server", CursorReceived)[-1].cursor)
    assert_in_sync(again, client, server)
    assert not again.of("client", Received) and not again.of("server", Received)
    assert again.bytes_sent("server") < 600 and again.bytes_sent("client") < 600


def test_a_cursor_from_another_store_falls_back_to_a_full_catch_up() -> None:
    net, made = world()
    server = port_with(net, made)
    other = port_with(net, made[:10])
    client = port_with(net, made[:50])
    pipe = connect(client, server, cursor=other.cursor())
    assert_in_sync(pipe, client, server)
    assert client.count() == server.count()


def test_a_cursor_past_the_end_falls_back() -> None:
    net, made = world()
    server = port_with(net, made)
    client = port_with(net, made[:5])
    bogus = server.store_id + struct.pack(">Q", 10**9)
    pipe = connect(client, server, cursor=bogus)
    assert_in_sync(pipe, client, server)


# ------------------------------------------------------------------ live
def test_a_state_vector_too_big_for_a_message_falls_back_to_bulk() -> None:
    from wallet.crdt import _varuint

    class BigDoc(MemoryPort):
        """A port whose state vector is as long as a Doc of ~1,000 entries'."""

        def state_vector(self) -> bytes:
            sv = decode_state_vector(super().state_vector())
            sv.update({(1 << 40) + i: 0 for i in range(1000)})
            return _varuint(len(sv)) + b"".join(_varuint(k) + _varuint(v)
                                                for k, v in sv.items())

    net, made = world()
    client = BigDoc(net.ledger(list(made[:200])))
    server = port_with(net, made[100:])
    assert len(client.state_vector()) > 9000 - 1024
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=client,
                   max_message_bytes=9000)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, port=server)
    c.initiate()
    pipe = Pipe(c, s).run()
    assert_in_sync(pipe, client, server)
    assert "SyncStep2" not in pipe.kinds("server") and "Entries" in pipe.kinds("server")
    # the server (8 MiB) sends the client no more than the 9,000 its hello accepts
    assert all(len(m) <= 9000 for side in ("client", "server") for m in pipe.sent[side])


def test_live_entries_travel_both_ways_after_in_sync() -> None:
    net = Net(witnesses=1, quorum=1, rng=random.Random(11))
    alice, bob = net.account(1), net.account(1)
    led = net.ledger()
    net.fund(led, alice[0], 500)
    net.fund(led, bob[0], 500)
    client, server = port_with(net, _all(led)), port_with(net, _all(led))
    pipe = connect(client, server)
    assert_in_sync(pipe, client, server)
    a_send = net.send(client.replica.ledger, alice[0], bob[0], 7)
    client.add_local([a_send])
    pipe.client.send_entries([a_send], cursor=client.cursor())
    b_send = net.send(server.replica.ledger, bob[0], alice[0], 9)
    server.add_local([b_send])
    at = server.cursor()
    pipe.server.send_entries([b_send], cursor=at)
    pipe.run()
    assert [h.how for h in pipe.of("server", Received)][-1] == "update"
    assert a_send.id in server.replica.ids() and b_send.id in client.replica.ids()
    assert pipe.of("client", CursorReceived)[-1].cursor == at
    assert client.digest() == server.digest()
    assert not pipe.of("client", Closed)


def _funded_pair(seed: int) -> tuple[Net, list, list, MemoryPort, MemoryPort]:
    """A network where alice holds 500, and two ports holding the same entries."""
    net = Net(witnesses=0, rng=random.Random(seed))
    alice, bob = net.account(1), net.account(1)
    led = net.ledger()
    net.fund(led, alice[0], 500)
    return net, alice, bob, port_with(net, _all(led)), port_with(net, _all(led))


def test_the_server_acknowledges_every_entry_message_once_stored() -> None:
    net, alice, bob, client, server = _funded_pair(13)
    pipe = connect(client, server)
    assert_in_sync(pipe, client, server)
    sent_before = pipe.client.entry_messages_sent
    sends = []
    for amount in (1, 2, 3):
        sends.append(net.send(client.replica.ledger, alice[0], bob[0], amount))
        client.add_local(sends[-1:])
        pipe.client.send_entries(sends[-1:])
    assert pipe.client.entry_messages_sent == sent_before + 3
    pipe.run()
    # a wallet-like port stores before it answers: one Ack per message, the last
    # covering everything the client sent
    assert pipe.of("client", Acked)[-1].count == pipe.client.entry_messages_sent
    assert pipe.client.entry_messages_acked == pipe.client.entry_messages_sent
    assert {s.id for s in sends} <= server.replica.ids()
    assert "Ack" not in pipe.kinds("client"), "a client never acknowledges"


def test_a_deferred_ack_waits_for_the_owner_and_covers_every_message() -> None:
    net, alice, bob, client, server = _funded_pair(14)
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=client)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, port=server,
                   defer_acks=True)
    c.initiate()
    pipe = Pipe(c, s).run()
    assert pipe.of("client", InSync) and not pipe.of("client", Acked)
    assert s.unacknowledged  # the client's catch-up Entries, not acknowledged yet
    for amount in (4, 5):
        send = net.send(client.replica.ledger, alice[0], bob[0], amount)
        client.add_local([send])
        c.send_entries([send])
    pipe.run()
    assert not pipe.of("client", Acked)
    s.acknowledge()  # the owner committed: one Ack for all of them
    pipe.run()
    assert [a.count for a in pipe.of("client", Acked)] == [c.entry_messages_sent]
    assert not s.unacknowledged
    s.acknowledge()  # nothing new: nothing sent
    assert s.data_to_send() == []


def test_an_ack_from_the_client_is_refused(setup) -> None:
    p = Peer(setup[1]).ready()
    expect_close(p, Ack(1), CloseCode.PROTOCOL, "only the server acknowledges")


def test_a_client_refuses_an_ack_of_what_it_never_sent() -> None:
    net, made = world()
    for bad in ((5,), (2, 1)):
        a, b = port_with(net, made[:5]), port_with(net, made)
        pipe = connect(a, b)
        assert pipe.of("client", InSync)
        sent = pipe.client.entry_messages_sent
        for count in bad:
            pipe.client.receive_data(encode(Ack(sent + count - 2 if len(bad) == 2 else
                                                sent + count)))
        (closed,) = pipe.client.events_received()[-1:]
        assert isinstance(closed, Closed) and closed.code == CloseCode.PROTOCOL
        assert "Ack of" in closed.reason


def test_votes_travel_as_entries_and_make_blocks_final() -> None:
    net = Net(witnesses=1, quorum=1, rng=random.Random(12))
    alice, bob = net.account(1), net.account(1)
    led = net.ledger()
    net.fund(led, alice[0], 500)
    s = net.send(led, alice[0], bob[0], 100)
    led.add([s])
    phone, relay = port_with(net, _all(led)), port_with(net, _all(led))
    pipe = connect(phone, relay)
    assert_in_sync(pipe, phone, relay)
    assert phone.replica.ledger.status[s.id].final is False
    vote = net.vote(s)
    relay.add_local([vote])
    pipe.server.send_entries([vote])
    pipe.run()
    assert phone.replica.ledger.status[s.id].final is True
    # and by catch-up: a fresh phone learns the block final at once
    fresh = port_with(net, (), opens=False)
    assert_in_sync(connect(fresh, relay), fresh, relay)
    assert fresh.replica.ledger.status[s.id].final is True


def test_live_entries_with_ten_bit_item_ids_reach_the_peer() -> None:
    net, made = world(3)
    client, server = port_with(net, made, bits=10), port_with(net, made, bits=10)
    pipe = connect(client, server)
    assert_in_sync(pipe, client, server)
    led = client.replica.ledger
    dev = net.accounts[0][1]
    news = []
    for _ in range(30):
        s = net.send(led, dev, net.accounts[1][0], 1)
        led.add([s])
        news.append(s)
    client.add_local(news)
    pipe.client.send_entries(news)
    pipe.run()
    assert not pipe.of("server", Closed), pipe.events["server"]
    assert {s.id for s in news} <= server.replica.ids()


def _all(led: Ledger) -> list[Block | Vote]:
    return [*led.blocks.values(), *led.votes.values()]


# ------------------------------------------------------------------ collisions
@pytest.mark.parametrize("seed", [1, 2])
def test_ten_bit_item_ids_collide_and_reconciliation_brings_everything(seed: int) -> None:
    net, made = world(seed)
    rng = random.Random(seed)
    shuffled = list(made)
    rng.shuffle(shuffled)
    a = port_with(net, shuffled[: len(made) * 2 // 3], bits=10)
    b = port_with(net, shuffled[len(made) // 3 :], bits=10)
    a.state_vector(), b.state_vector()  # builds the Docs
    assert a.replica.outside and b.replica.outside, "10-bit item ids collide"
    pipe = connect(a, b)
    assert_in_sync(pipe, a, b)
    assert "Buckets" in pipe.kinds("client"), "y-sync alone misses collided entries"
    want = {e.id for e in made} | {o.id for o in net.opens}
    assert a.replica.ids() == want
    fresh = net.ledger(made)
    assert dict(fresh.status) == dict(a.replica.ledger.status)
    assert len(a.replica.ledger.fraud_proofs()) == len(fresh.fraud_proofs()) >= 1
    assert len(b.replica.ledger.fraud_proofs()) == len(fresh.fraud_proofs())


def test_ids_larger_than_one_message_are_split_and_fetches_chunked() -> None:
    """With 1-bit item ids y-sync carries almost nothing, so reconciliation carries
    nearly everything: Ids split over messages, Fetches and Entries chunked."""
    net, made = world()
    a = port_with(net, made[:20], bits=1)
    b = port_with(net, made, bits=1)
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=a,
                   max_message_bytes=9000, max_entries=20)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, port=b,
                   max_message_bytes=9000, max_entries=20)
    c.initiate()
    pipe = Pipe(c, s).run()
    assert_in_sync(pipe, a, b)
    assert pipe.kinds("server").count("Ids") > 1
    assert pipe.kinds("client").count("Fetch") > 1
    assert all(len(m) <= 9000 for side in ("client", "server") for m in pipe.sent[side])
    with pytest.raises(ValueError, match="Buckets"):
        Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=a,
                   max_message_bytes=8000)


@cache
def extras(seed: int) -> tuple[Block | Vote, ...]:
    """Entries made after ``world(seed)``: a few payments with their votes."""
    net, made = world(seed)
    led = net.ledger(made)
    out: list[Block | Vote] = []
    devs = [d for acc in net.accounts for d in acc.devices][1:]
    for i in range(4):
        s = net.send(led, devs[i], devs[i + 1], 1, memo=b"", request_id=bytes([i]))
        v = net.votes(s)
        led.add([s, *v])
        out += [s, *v]
    return tuple(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from([1, 2, 3, 4]),
    split_seed=st.integers(0, 2**32),
    order_seed=st.integers(0, 2**32),
    bits=st.sampled_from([10, 53]),
    share=st.floats(0.0, 1.0),
    live=st.integers(0, 8),
)
def test_random_splits_and_interleavings_end_in_sync(
    seed: int, split_seed: int, order_seed: int, bits: int, share: float, live: int
) -> None:
    """Any split of a network's entries, any interleaving of the two directions, and
    new entries sent live (``send_entries``) at random moments of the catch-up: the
    conversation ends with both sides holding the same set, in sync."""
    net, made = world(seed)
    rng = random.Random(split_seed)
    a_part, b_part = [], []
    for e in made:
        r = rng.random()
        if r < share:
            a_part.append(e)
        elif r < share + (1 - share) / 2:
            b_part.append(e)
        else:
            a_part.append(e)
            b_part.append(e)
    a_opens = rng.random() < 0.8
    a = port_with(net, a_part, opens=a_opens, bits=bits)
    b = port_with(net, b_part, opens=not a_opens or rng.random() < 0.8, bits=bits)
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=a)
    sv = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, port=b)
    c.initiate()
    pipe = Pipe(c, sv)
    order = random.Random(order_seed)
    todo = list(extras(seed)[:live])
    while todo:  # deliver a few messages, then one side makes an entry and sends it
        for _ in range(order.randint(0, 6)):
            pipe.step(order)
        side, port = order.choice([(c, a), (sv, b)])
        if side.live:
            e = todo.pop(0)
            port.add_local([e])
            side.send_entries([e], cursor=port.cursor() if order.random() < 0.5 else b"")
        elif not pipe.step(order):
            break
    pipe.run(order)
    assert_in_sync(pipe, a, b)
    if todo:  # entries made after the conversation ended travel in the next one
        a.add_local(todo)
        pipe = connect(a, b, rng=order)
        assert_in_sync(pipe, a, b)
    assert a.replica.ids() == {e.id for e in (*made, *extras(seed)[:live])} | {
        o.id for o in net.opens}


# ------------------------------------------------------------------ hostile
class Peer:
    """A hand-driven client talking to a real server ``Connection`` over ``victim``."""

    def __init__(self, victim: MemoryPort, *, key: SigningKey | None = None,
                 role: int = ROLE_NODE, open_entry: bytes = b"",
                 network: bytes | None = None, **kw: object) -> None:
        self.victim = victim
        self.key = key or SigningKey.generate()
        self.conn = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE,
                               port=victim, **kw)  # type: ignore[arg-type]
        self.challenge = bytes(range(32))
        self.network = network or victim.genesis.network_id
        self.role = role
        self.open_entry = open_entry
        self.server_hello: Hello | None = None

    def hello(self, **over: object) -> Hello:
        fields = dict(version=PROTOCOL_VERSION, role=self.role, network=self.network,
                      key=bytes(self.key.verify_key), challenge=self.challenge,
                      open=self.open_entry)
        fields.update(over)
        return Hello(**fields)  # type: ignore[arg-type]

    def send(self, msg: object) -> list[object]:
        data = msg if isinstance(msg, bytes) else encode(msg)  # type: ignore[arg-type]
        self.conn.receive_data(data)
        out = [decode(m, max_bytes=1 << 24, max_entries=1 << 20)
               for m in self.conn.data_to_send()]
        for m in out:
            if isinstance(m, Hello):
                self.server_hello = m
        return out

    def proof(self) -> Proof:
        assert self.server_hello is not None
        payload = proof_payload(self.network, self.server_hello.challenge, self.challenge,
                                bytes(self.key.verify_key))
        return Proof(sign_message(self.key, Kind.HELLO, payload))

    def ready(self) -> Peer:
        self.send(self.hello())
        out = self.send(self.proof())
        assert self.conn.live and any(isinstance(m, Want) for m in out), out
        self.conn.events_received()
        return self

    def closed(self) -> Closed:
        ev = [e for e in self.conn.events_received() if isinstance(e, Closed)]
        assert ev, "the victim must close"
        assert not self.conn.live
        return ev[-1]


def expect_close(peer: Peer, msg: object, code: CloseCode, *words: str) -> None:
    before = snapshot(peer.victim)
    out = peer.send(msg)
    closes = [m for m in out if isinstance(m, Close)]
    assert closes, f"no Close sent for {msg!r:.200}: {out!r:.300}"
    assert closes[-1].code == code, closes[-1]
    ev = peer.closed()
    assert ev.code == code and not ev.by_peer
    for w in words:
        assert w.lower() in ev.reason.lower(), (w, ev.reason)
    assert snapshot(peer.victim) == before, "nothing stored on the victim"
    # and it stays closed: later messages are ignored
    assert peer.send(Digest(b"\0" * 32, 0)) == []


@pytest.fixture()
def setup() -> tuple[Net, MemoryPort, list[Block | Vote], Ledger]:
    net = Net(witnesses=1, quorum=1, rng=random.Random(21))
    alice, bob = net.account(1), net.account(1)
    led = net.ledger()
    net.fund(led, alice[0], 500)
    s = net.send(led, alice[0], bob[0], 100)
    led.add([s])
    extra = [s, *net.votes(s)]
    victim = MemoryPort(net.ledger(_all(led)[: len(_all(led)) - 2]))
    return net, victim, extra, led


def test_garbage_bytes_before_the_handshake(setup) -> None:
    _, victim, _, _ = setup
    expect_close(Peer(victim), b"\xff\x00garbage", CloseCode.PROTOCOL, "unknown message type")


def test_empty_message(setup) -> None:
    expect_close(Peer(setup[1]), b"", CloseCode.PROTOCOL, "empty")


def test_any_message_before_the_handshake(setup) -> None:
    _, victim, extra, _ = setup
    for msg in (Entries(tuple(e.raw for e in extra)), Want(b"", 0, b""),
                Update(encode_items([])), Digest(b"\0" * 32, 0)):
        expect_close(Peer(victim), msg, CloseCode.PROTOCOL, "before the handshake")


def test_truncated_and_trailing_bytes(setup) -> None:
    _, victim, _, _ = setup
    hello = encode(Peer(victim).hello())
    expect_close(Peer(victim), hello[:-3], CloseCode.PROTOCOL, "truncated")
    expect_close(Peer(victim), hello + b"\0", CloseCode.PROTOCOL, "trailing")
    p = Peer(victim).ready()
    expect_close(p, encode(Digest(b"\1" * 32, 3))[:-1], CloseCode.PROTOCOL, "truncated", "count")


def test_unknown_type_after_the_handshake(setup) -> None:
    expect_close(Peer(setup[1]).ready(), b"\x42abc", CloseCode.PROTOCOL, "unknown message type 66")


def test_oversized_message(setup) -> None:
    victim = setup[1]
    p = Peer(victim, max_message_bytes=10_000).ready()
    expect_close(p, encode(Update(b"\0" * 10_000)), CloseCode.TOO_BIG, "10005 bytes",
                 "limit 10000")
    p = Peer(victim).ready()  # under the message limit, over the gate's 4 MiB an update
    expect_close(p, encode(Update(b"\0" * (5 << 20))), CloseCode.TOO_BIG, "oversized")
    p = Peer(victim, max_entries=3).ready()
    expect_close(p, encode(Entries((b"x",) * 4)), CloseCode.TOO_BIG, "4 entries", "limit 3")
    p = Peer(victim, max_entries=3).ready()
    expect_close(p, Fetch((b"\0" * 32,) * 4), CloseCode.TOO_BIG, "4 ids in one fetch")


def test_a_second_hello_is_refused(setup) -> None:
    p = Peer(setup[1]).ready()
    expect_close(p, p.hello(), CloseCode.PROTOCOL, "second hello")
    p = Peer(setup[1])
    p.send(p.hello())
    expect_close(p, p.hello(), CloseCode.PROTOCOL, "second hello")


def test_a_proof_out_of_turn(setup) -> None:
    p = Peer(setup[1])
    expect_close(p, Proof(b"\0" * 64), CloseCode.PROTOCOL, "proof out of turn")
    p = Peer(setup[1]).ready()
    expect_close(p, p.proof(), CloseCode.PROTOCOL, "proof out of turn")


def test_a_forged_proof(setup) -> None:
    p = Peer(setup[1])
    p.send(p.hello())
    forged = Proof(sign_message(SigningKey.generate(), Kind.HELLO, b"whatever"))
    expect_close(p, forged, CloseCode.BAD_PROOF, "key proof")


def test_a_proof_replayed_from_another_conversation(setup) -> None:
    p = Peer(setup[1]).ready()
    old = p.proof()
    q = Peer(setup[1], key=p.key)
    q.send(q.hello())
    expect_close(q, old, CloseCode.BAD_PROOF, "key proof")


def test_a_witness_key_without_its_proof(setup) -> None:
    p = Peer(setup[1])
    p.send(p.hello(witness=bytes(SigningKey.generate().verify_key)))
    expect_close(p, p.proof(), CloseCode.BAD_PROOF, "witness")


def test_a_witness_signature_without_a_witness_key(setup) -> None:
    p = Peer(setup[1])
    p.send(p.hello())
    proof = Proof(p.proof().signature, b"\1" * 64)
    expect_close(p, proof, CloseCode.PROTOCOL, "named no witness")


def test_wrong_network(setup) -> None:
    other = Net(witnesses=0, rng=random.Random(99), name="other")
    p = Peer(setup[1], network=other.id)
    expect_close(p, p.hello(), CloseCode.WRONG_NETWORK, "another network")


def test_a_client_refuses_a_server_of_another_network(setup) -> None:
    _, victim, _, _ = setup
    other = Net(witnesses=0, rng=random.Random(98), name="other")
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_DEVICE, port=victim)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE,
                   port=MemoryPort(other.ledger()),
                   resolve=None)
    c.initiate()
    hello = decode(c.data_to_send()[0], max_bytes=1 << 20, max_entries=10)
    assert isinstance(hello, Hello)
    lie = Hello(PROTOCOL_VERSION, ROLE_NODE, other.id, bytes(s.key.verify_key), b"\1" * 32)
    before = snapshot(victim)
    c.receive_data(encode(lie))
    ev = [e for e in c.events_received() if isinstance(e, Closed)]
    assert ev and ev[0].code == CloseCode.WRONG_NETWORK and "another network" in ev[0].reason
    assert snapshot(victim) == before


def test_version_mismatch(setup) -> None:
    p = Peer(setup[1])
    expect_close(p, p.hello(version=PROTOCOL_VERSION + 1), CloseCode.VERSION,
                 f"version {PROTOCOL_VERSION + 1}", f"speaks {PROTOCOL_VERSION}")
    # a later version's hello may not even parse as ours: still a version close
    p = Peer(setup[1])
    expect_close(p, bytes([1, 9]) + b"anything at all", CloseCode.VERSION, "version 9")


def test_a_hello_accepting_too_little(setup) -> None:
    p = Peer(setup[1])
    expect_close(p, p.hello(max_bytes=100), CloseCode.PROTOCOL, "at least 9000")
    p = Peer(setup[1])
    expect_close(p, p.hello(max_entries=0), CloseCode.PROTOCOL, "0 entries")


def test_an_unknown_role(setup) -> None:
    p = Peer(setup[1])
    expect_close(p, p.hello(role=7), CloseCode.PROTOCOL, "role 7")


def test_a_genesis_that_is_not_the_network(setup) -> None:
    other = Net(witnesses=0, rng=random.Random(97), name="other")
    p = Peer(setup[1])
    expect_close(p, p.hello(genesis=other.genesis.raw), CloseCode.WRONG_NETWORK, "genesis")


def test_a_device_hello_with_a_bad_open(setup) -> None:
    net, victim, _, _ = setup
    dev = net.accounts[0][0]
    bad = bytearray(dev.open.raw)
    bad[-1] ^= 1
    p = Peer(victim, key=dev.key, role=ROLE_DEVICE, open_entry=bytes(bad))
    expect_close(p, p.hello(), CloseCode.BAD_OPEN, "open", "verify")
    p = Peer(victim, key=dev.key, role=ROLE_DEVICE, open_entry=b"junk")
    expect_close(p, p.hello(), CloseCode.BAD_OPEN, "open")


def test_a_device_hello_with_someone_elses_open(setup) -> None:
    net, victim, _, _ = setup
    mine, theirs = net.accounts[0][0], net.accounts[1][0]
    p = Peer(victim, key=mine.key, role=ROLE_DEVICE, open_entry=theirs.open.raw)
    expect_close(p, p.hello(), CloseCode.BAD_OPEN, "not this device's open")
    s = net.send(net.ledger(), net.mint, mine, 5, kind=Kind.ISSUE)  # not an open at all
    p = Peer(victim, key=mine.key, role=ROLE_DEVICE, open_entry=s.raw)
    expect_close(p, p.hello(), CloseCode.BAD_OPEN, "not this device's open")


def test_a_device_with_its_own_open_is_welcome(setup) -> None:
    net, victim, _, _ = setup
    dev = net.accounts[0][0]
    Peer(victim, key=dev.key, role=ROLE_DEVICE, open_entry=dev.open.raw).ready()


def _update_of(*entries: Block | Vote) -> bytes:
    return encode_items([(item_client_id(e.id), id_text(e.id), e.raw) for e in entries])


def test_an_update_that_deletes_an_entry(setup) -> None:
    victim = setup[1]
    doc = Doc()
    m = doc.get(ROOT, type=Map)
    victim_update = victim.update_since(b"\0")
    doc.apply_update(victim_update)
    sv = doc.get_state()
    del m[next(iter(m.keys()))]
    expect_close(Peer(victim).ready(), Update(doc.get_update(sv)), CloseCode.REFUSED, "delete")


def test_an_update_that_overwrites_an_entry(setup) -> None:
    _, victim, extra, _ = setup
    doc = Doc()
    m = doc.get(ROOT, type=Map)
    doc.apply_update(victim.update_since(b"\0"))
    sv = doc.get_state()
    m[next(iter(m.keys()))] = extra[0].raw
    expect_close(Peer(victim).ready(), Update(doc.get_update(sv)), CloseCode.REFUSED, "origin")
    # or an item under an entry's key holding other bytes
    e = extra[0]
    key = id_text(next(iter(victim.replica.ids())))
    forged = encode_items([(item_client_id(e.id), key, e.raw)])
    expect_close(Peer(victim).ready(), Update(forged), CloseCode.REFUSED, "key_mismatch")


def test_an_update_with_a_forged_signature(setup) -> None:
    _, victim, extra, _ = setup
    raw = bytearray(extra[0].raw)
    raw[-5] ^= 0x40
    forged = bytes(raw)
    from wallet.encoding import entry_hash
    fid = entry_hash(forged)
    upd = encode_items([(item_client_id(extra[1].id), id_text(extra[1].id), extra[1].raw),
                        (item_client_id(fid), id_text(fid), forged)])
    expect_close(Peer(victim).ready(), Update(upd), CloseCode.REFUSED, "bad_entry", id_text(fid))


def test_an_update_carrying_a_foreign_witness_vote(setup) -> None:
    net, victim, extra, _ = setup
    stranger = keygen(random.Random(5))
    v = net.vote(extra[0], stranger)
    expect_close(Peer(victim).ready(), Update(_update_of(extra[0], v)), CloseCode.REFUSED,
                 "unknown_witness")


def test_entries_with_one_bad_entry_store_none_of_them(setup) -> None:
    net, victim, extra, _ = setup
    stranger = keygen(random.Random(6))
    bad_vote = net.vote(extra[0], stranger)
    msg = Entries((extra[0].raw, extra[1].raw, bad_vote.raw))
    expect_close(Peer(victim).ready(), msg, CloseCode.REFUSED, "witness")
    assert extra[0].id not in victim.replica.ids()
    forged = bytearray(extra[0].raw)
    forged[-1] ^= 1
    msg = Entries((extra[1].raw, bytes(forged)), last=True)
    expect_close(Peer(victim).ready(), msg, CloseCode.REFUSED, "bad_entry")
    other = Net(witnesses=0, rng=random.Random(96), name="other")
    msg = Entries((extra[0].raw, other.mint.open.raw))
    expect_close(Peer(victim).ready(), msg, CloseCode.REFUSED, "another network")
    msg = Entries((extra[0].raw, b"\x00" * 40))
    expect_close(Peer(victim).ready(), msg, CloseCode.REFUSED, "bad_entry")


def test_ids_outside_the_listed_buckets() -> None:
    net, made = world()
    a, b = port_with(net, made[:100], bits=1), port_with(net, made, bits=1)
    forged = False

    def tamper(to: str, data: bytes) -> bytes:
        nonlocal forged
        if to == "client" and data[0] == 9:  # the server's Ids
            forged = True
            bitmap = bytearray(32)
            bitmap[0] = 1  # bucket 0 only, yet an id of bucket 5
            return encode(Ids(bytes(bitmap), (b"\x05" + b"\0" * 31,)))
        return data

    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=a)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, port=b)
    c.initiate()
    pipe = Pipe(c, s, tamper=tamper)
    before = snapshot(a)
    pipe.run()
    assert forged
    ev = pipe.of("client", Closed)
    assert ev and ev[0].code == CloseCode.PROTOCOL and "outside the buckets" in ev[0].reason
    assert pipe.of("server", Closed)[0].by_peer
    assert not ev[0].by_peer
    # what y-sync brought before is fine; nothing came of the forged Ids
    assert snapshot(a)[0] - before[0] == sum(len(r.entries) for r in pipe.of("client", Received))


def test_unsolicited_ids_are_refused(setup) -> None:
    net, victim, _, _ = setup
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE, port=victim)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE,
                   port=MemoryPort(net.ledger()))
    c.initiate()
    Pipe(c, s).run()
    assert c.live
    c.events_received()
    before = snapshot(victim)
    c.receive_data(encode(Ids(b"\xff" * 32, ())))
    ev = [e for e in c.events_received() if isinstance(e, Closed)]
    assert ev and ev[0].code == CloseCode.PROTOCOL and "no Buckets asked" in ev[0].reason
    assert snapshot(victim) == before


def test_a_server_refuses_ids_and_a_client_refuses_fetch(setup) -> None:
    p = Peer(setup[1]).ready()
    expect_close(p, Ids(bytes(32), ()), CloseCode.PROTOCOL, "only the client")


def test_buckets_beyond_the_rounds_limit_are_refused(setup) -> None:
    p = Peer(setup[1]).ready()
    for _ in range(3):
        assert any(isinstance(m, Ids) for m in p.send(Buckets((b"\0" * 32,) * 256)))
    expect_close(p, Buckets((b"\0" * 32,) * 256), CloseCode.PROTOCOL, "reconciliation rounds")


def test_a_second_want_is_refused(setup) -> None:
    p = Peer(setup[1]).ready()
    p.send(Want(b"", 0, b""))
    expect_close(p, Want(b"", 0, b""), CloseCode.PROTOCOL, "second want")


def test_a_malformed_state_vector(setup) -> None:
    p = Peer(setup[1]).ready()
    expect_close(p, Want(b"", 5, b"\x05\x01"), CloseCode.PROTOCOL, "state vector")


def test_a_peer_close_is_an_event() -> None:
    net, made = world()
    a, b = port_with(net, made[:5]), port_with(net, made)
    pipe = connect(a, b)
    pipe.server.close(CloseCode.SHUTDOWN, "relay stopping")
    pipe.run()
    ev = pipe.of("client", Closed)
    assert ev and ev[-1].by_peer and ev[-1].code == CloseCode.SHUTDOWN
    assert ev[-1].reason == "relay stopping" and not pipe.client.live


# ------------------------------------------------------------------ fuzz
@cache
def _fuzz_victim() -> tuple[Net, list[bytes]]:
    net, made = world()
    seeds = [encode(Digest(b"\0" * 32, 1)), encode(Want(b"", 1, b"\x00")),
             encode(Entries((made[0].raw,), True)), encode(Update(_update_of(made[0]))),
             encode(Buckets((b"\0" * 32,) * 256)), encode(Fetch((made[0].id,))),
             encode(SyncStep2(_update_of(made[1]))), encode(Close(3, "x")),
             encode(Ids(bytes(32), ()))]
    return net, seeds


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msgs=st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.tuples(st.integers(0, 8), st.integers(0, 4000), st.binary(max_size=4)),
        ),
        max_size=6,
    ),
    handshake=st.booleans(),
)
def test_receive_data_never_raises(msgs: list, handshake: bool) -> None:
    net, seeds = _fuzz_victim()
    victim = MemoryPort(net.ledger())
    before = snapshot(victim)
    peer = Peer(victim)
    if handshake:
        peer.ready()
    for m in msgs:
        if isinstance(m, tuple):  # a mutated valid message
            i, pos, junk = m
            base = seeds[i]
            pos %= len(base)
            m = base[:pos] + junk + base[pos + len(junk):]
        peer.conn.receive_data(m)
        peer.conn.data_to_send()
    for e in peer.conn.events_received():
        if isinstance(e, Closed):
            assert e.code != CloseCode.INTERNAL, e
    after = snapshot(victim)
    if after != before:  # only what a valid message carried, and valid entries
        assert after[0] > before[0]


# ------------------------------------------------------------------ a wallet's store
def test_a_wallet_port_catches_up_resumes_and_refuses_whole(tmp_path) -> None:
    from sync.port import WalletPort
    from wallet.wallet import Wallet

    net, made = world()
    wallet = Wallet.join(tmp_path / "w", net.genesis.raw)
    try:
        port = WalletPort(wallet)
        server = port_with(net, made[:200])
        pipe = connect(port, server)  # type: ignore[arg-type]
        assert_in_sync(pipe, port, server)  # type: ignore[arg-type]
        rows = wallet.store.high_water()
        # a bad entry among good ones: nothing of the message is stored
        stranger = keygen(random.Random(8))
        bad = net.vote(made[250] if isinstance(made[250], Block) else made[251], stranger)
        good = [e for e in made[200:] if isinstance(e, Block)][:3]
        p = Peer(port).ready()  # type: ignore[arg-type]
        before = (port.count(), port.digest(), wallet.store.high_water())
        out = p.send(Entries((*(e.raw for e in good), bad.raw)))
        assert [m.code for m in out if isinstance(m, Close)] == [CloseCode.REFUSED]
        assert "witness" in p.closed().reason
        assert (port.count(), port.digest(), wallet.store.high_water()) == before == (
            port.count(), port.digest(), rows)
        assert all(wallet.status(e.id) is None for e in good)
        # resume: the cursor the server gave, and the wallet's own rows as the server's
        server.add_local(made[200:])
        again = connect(port, server, cursor=pipe.of("client", CursorReceived)[-1].cursor,  # type: ignore[arg-type]
                        server_cursor=pipe.of("server", CursorReceived)[-1].cursor)
        assert_in_sync(again, port, server)  # type: ignore[arg-type]
        assert sum(len(r.entries) for r in again.of("client", Received)) == len(made) - 200
        reopened = Wallet.open(tmp_path / "w")
        assert len(reopened.ledger) == len(made) + len(net.opens)
        reopened.close()
    finally:
        wallet.close()


# ------------------------------------------------------------------ encoding
def test_the_documented_sync_vectors_decode_and_the_proof_verifies() -> None:
    from tests.test_protocol_vectors import DOCUMENTED
    from tests.vectors import SYNC_CLIENT_CHALLENGE, SYNC_SERVER_CHALLENGE, pub
    from wallet.encoding import parse_genesis, verify_message

    net = parse_genesis(bytes.fromhex(DOCUMENTED["genesis"])).network_id
    hello = decode(bytes.fromhex(DOCUMENTED["sync_hello"]), max_bytes=1 << 20, max_entries=10)
    assert isinstance(hello, Hello) and hello.network == net and hello.role == ROLE_DEVICE
    assert hello.challenge == SYNC_CLIENT_CHALLENGE and hello.count == 3
    assert hello.open == bytes.fromhex(DOCUMENTED["open"]) and hello.key == pub(5)
    proof = decode(bytes.fromhex(DOCUMENTED["sync_proof"]), max_bytes=1 << 20, max_entries=10)
    assert isinstance(proof, Proof)
    payload = proof_payload(net, hello.challenge, SYNC_SERVER_CHALLENGE, pub(7))
    assert verify_message(pub(7), Kind.HELLO, payload, proof.signature)
    close = decode(bytes.fromhex(DOCUMENTED["sync_close"]), max_bytes=1 << 20, max_entries=10)
    assert close == Close(CloseCode.WRONG_NETWORK, "this side serves another network")


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300), kind=st.sampled_from(sorted(TYPE)))
def test_whatever_decodes_encodes_back_to_the_same_bytes(data: bytes, kind: int) -> None:
    """The parser takes nothing the encoder would not produce."""
    raw = bytes([kind]) + data
    try:
        msg = decode(raw, max_bytes=1 << 20, max_entries=100)
    except ProtocolViolation:
        return
    assert encode(msg) == raw


@pytest.mark.parametrize("msg", [
    Hello(PROTOCOL_VERSION, ROLE_NODE, b"n" * 32, b"k" * 32, b"c" * 32, b"w" * 32, b"g" * 10,
          b"o" * 5, 7),
    Proof(b"s" * 64, b"t" * 64), Want(b"cur", 5, b"\x00"), Entries((b"a", b"bc"), True, b"x"),
    SyncStep2(b"\x00\x00", b"c"), Update(b"\x00\x00"), Digest(b"d" * 32, 9),
    Buckets((b"b" * 32,) * 256), Ids(b"\x01" + bytes(31), (b"\x00" * 32,)),
    Fetch((b"f" * 32,)), Cursor(b"c" * 64), Close(6, "é" * 300),
])
def test_every_message_round_trips(msg: object) -> None:
    raw = encode(msg)  # type: ignore[arg-type]
    back = decode(raw, max_bytes=1 << 20, max_entries=100)
    if isinstance(msg, Close):  # a long reason is cut on a character boundary
        assert isinstance(back, Close) and back.reason == "é" * 250
    else:
        assert back == msg


def test_a_text_message_is_refused(setup) -> None:
    p = Peer(setup[1])
    p.conn.receive_data("hello")  # type: ignore[arg-type]
    assert p.closed().code == CloseCode.PROTOCOL


def test_a_client_refuses_a_forged_server_proof_and_a_forged_update(setup) -> None:
    net, victim, extra, _ = setup
    node = SigningKey.generate()

    def client_after_server_hello() -> tuple[Connection, Hello]:
        c = Connection(client=True, key=SigningKey.generate(), role=ROLE_DEVICE, port=victim)
        c.initiate()
        h = decode(c.data_to_send()[0], max_bytes=1 << 20, max_entries=10)
        assert isinstance(h, Hello) and h.genesis == net.genesis.raw
        c.receive_data(encode(Hello(PROTOCOL_VERSION, ROLE_NODE, net.id,
                                    bytes(node.verify_key), b"\x07" * 32)))
        return c, h

    before = snapshot(victim)
    c, _ = client_after_server_hello()
    c.receive_data(encode(Proof(sign_message(node, Kind.HELLO, b"not the payload"))))
    ev = [e for e in c.events_received() if isinstance(e, Closed)]
    assert ev and ev[0].code == CloseCode.BAD_PROOF and not c.live
    c, h = client_after_server_hello()
    good = proof_payload(net.id, h.challenge, b"\x07" * 32, bytes(node.verify_key))
    c.receive_data(encode(Proof(sign_message(node, Kind.HELLO, good))))
    assert c.live
    raw = bytearray(extra[0].raw)
    raw[-1] ^= 1
    from wallet.encoding import entry_hash
    fid = entry_hash(bytes(raw))
    c.receive_data(encode(SyncStep2(encode_items([(item_client_id(fid), id_text(fid),
                                                    bytes(raw))]))))
    ev = [e for e in c.events_received() if isinstance(e, Closed)]
    assert ev and ev[0].code == CloseCode.REFUSED and "bad_entry" in ev[0].reason
    assert snapshot(victim) == before


def test_resolve_check_peer_and_a_proved_witness_key(setup) -> None:
    net, victim, _, _ = setup
    # a relay that resolves the port from the hello, or refuses the network
    other = Net(witnesses=0, rng=random.Random(95), name="other")
    seen: list[Hello] = []

    def resolve(h: Hello) -> MemoryPort | tuple[CloseCode, str]:
        seen.append(h)
        if h.network == net.id:
            return victim
        return CloseCode.UNKNOWN_NETWORK, "this relay does not serve that network"

    wkey = net.witness_keys[0]
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE,
                   port=MemoryPort(net.ledger()), witness_key=wkey)
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, resolve=resolve)
    c.initiate()
    pipe = Pipe(c, s).run()
    assert seen[0].genesis == net.genesis.raw
    ready = pipe.of("server", Ready)[0]
    assert ready.witness == bytes(wkey.verify_key) and ready.role == ROLE_NODE
    assert_in_sync(pipe, c.port, victim)  # type: ignore[arg-type]
    c = Connection(client=True, key=SigningKey.generate(), role=ROLE_NODE,
                   port=MemoryPort(other.ledger()))
    s = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE, resolve=resolve)
    c.initiate()
    pipe = Pipe(c, s).run()
    closed = pipe.of("client", Closed)[0]
    assert closed.by_peer and closed.code == CloseCode.UNKNOWN_NETWORK
    assert "does not serve" in closed.reason
    # check_peer refuses a peer by its hello
    p = Peer(victim, check_peer=lambda h: (CloseCode.OVERLOADED, "too many peers"))
    expect_close(p, p.hello(), CloseCode.OVERLOADED, "too many peers")


def test_ack_is_encoded_as_documented() -> None:
    """docs/protocol.md: type 12, then count as a big-endian u64."""
    data = encode(Ack(258))
    assert data == bytes([12]) + (258).to_bytes(8, "big")
    assert decode(data, max_bytes=9000, max_entries=1) == Ack(258)
    with pytest.raises(ProtocolViolation, match="truncated"):
        decode(data[:-1], max_bytes=9000, max_entries=1)
