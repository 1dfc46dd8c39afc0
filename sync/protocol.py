"""The sync protocol as a sans-I/O state machine (DESIGN §6; docs/protocol.md "Sync protocol").

A ``Connection`` is fed whole messages with ``receive_data`` and hands back the
messages to send (``data_to_send``) and what happened (``events_received``). It never
touches a socket: the websocket client, the relay, the till's listener and the tests
all drive this same code. Everything it learns from the other side goes through the
local replica's ``Port`` — for updates, the CRDT gate — before anything is stored.

The conversation::

    client                                   server
    Hello(challenge c) ───────────────────▶  checks version, network, the device's open
                       ◀─────────────────── Hello(challenge s), Proof(sig over c)
    Proof(sig over s)  ───────────────────▶
    ── both ready: each sends Want(cursor | state vector) ──
    catch-up: Entries since the cursor, all Entries (bulk, the other side is empty or
              the cursor is not ours), or Updates + SyncStep2 (the Yjs update the state
              vector lacks); then each sends Digest
    digests differ → the client sends Buckets; the server answers Ids per differing
              bucket; the client sends the Entries the server lacks and Fetches the
              rest; the server answers each Fetch with Entries (last) and its Digest
    digests agree → InSync; each side sends Cursor (where the peer may resume from)
    live: Update (new entries as a Yjs update) and Cursor, both ways; Close ends it

Messages are cut to the limits (``CHUNK_BYTES``, ``CHUNK_ENTRIES``, the message size);
a catch-up of Entries is read from the store as the transport drains it, at most
``CATCH_UP_WINDOW_BYTES`` per ``data_to_send`` (``streaming`` says more is to come, and
what else there is to say waits behind it, in order); anything malformed, out of turn,
forged or refused by the gate ends the conversation with a ``Close`` whose code and
reason say what was wrong, and nothing of it is stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from nacl.signing import SigningKey

from sync.errors import CloseCode, ProtocolViolation
from sync.messages import (
    MIN_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ROLE_DEVICE,
    Ack,
    Buckets,
    Close,
    Cursor,
    Digest,
    Entries,
    Fetch,
    Hello,
    Ids,
    Message,
    MessageTooBig,
    Proof,
    SyncStep2,
    Update,
    VersionMismatch,
    Want,
    decode,
    encode,
)
from wallet.crdt import (
    ITEM_ID_BITS,
    decode_update,
    item_client_id,
    item_section,
    join_sections,
)
from wallet.encoding import (
    Block,
    Entry,
    Genesis,
    Kind,
    id_text,
    parse_entry,
    parse_genesis,
    sign_message,
)
from wallet.encoding import verify_message as verify_sig
from wallet.errors import BadEntry, EncodingError, GateRefused, TallyError

MAX_MESSAGE_BYTES = 8 << 20
"""The largest message this side accepts (and, by default, sends)."""
RECONCILE_ROUNDS_MAX = 3
"""Bucket reconciliation rounds per conversation before giving up on agreeing."""
DIGEST_REPLIES_MAX = 32
"""How often a server answers a client's differing Digest with its own."""
MAX_ENTRIES_PER_MESSAGE = 20_000
"""The most entries (or fetched ids) one message may carry."""
CHUNK_ENTRIES = 5_000
"""The most entries this side puts in one ``Entries`` or ``Update`` it sends."""
CHUNK_BYTES = 1 << 20
"""The most bytes of entries this side puts in one ``Entries``, ``Update`` or
``SyncStep2`` it sends (well under a peer's gate limit of 4 MiB an update)."""
CATCH_UP_BATCH_ENTRIES = 20_000
"""Entries of a catch-up a client gathers from consecutive ``Entries`` before its port
merges them: a batch that big has its signatures checked in worker processes beside
the merge (``wallet.verify_pool``), where one of a message's ~4,000 checks them first."""
CATCH_UP_WINDOW_BYTES = 4 << 20
"""The most bytes of a catch-up one ``data_to_send`` hands out: the rest is read from
the store as the transport drains, so a cold catch-up is never built whole in memory."""


class Port(Protocol):
    """What the protocol needs from the local replica of one network."""

    genesis: Genesis

    def count(self) -> int:
        """How many entries are held."""

    def digest(self) -> bytes:
        """The entry-set digest."""

    def state_vector(self) -> bytes:
        """The Doc's state vector."""

    def update_since(self, state_vector: bytes) -> bytes:
        """The Yjs update a peer with this state vector lacks."""

    def apply_update(self, update: bytes) -> list[Entry]:
        """Gate, validate and store an update; raise GateRefused to refuse it whole."""

    def add_raw(self, bodies: list[bytes]) -> list[Entry]:
        """Verify, validate and store raw entries; raise BadEntry to refuse them."""

    def cursor(self) -> bytes:
        """Where the store stands now (opaque, at most 64 bytes)."""

    def entries_since(self, cursor: bytes) -> Iterator[list[bytes]] | None:
        """Chunks of entries stored after ``cursor``; None if the cursor is not ours."""

    def bucket_sums(self) -> list[bytes]:
        """256 digests, of the ids whose first byte is 0, 1, … 255."""

    def bucket_ids(self, bucket: int) -> list[bytes]:
        """The ids held whose first byte is ``bucket``."""

    def bodies(self, ids: Iterable[bytes]) -> list[bytes]:
        """The signed bytes of the held entries among ``ids``, dependencies first."""


ItemRow = tuple[int, bytes]
"""An entry as one Yjs item of an update: its client id and its ``item_section``."""


def item_rows(entries: Iterable[Entry], bits: int = ITEM_ID_BITS) -> list[ItemRow]:
    """Each entry's item row (encoded once, it can go into any number of updates)."""
    rows = []
    for e in entries:
        client = item_client_id(e.id, bits)
        rows.append((client, item_section(client, id_text(e.id), e.raw)))
    return rows


# ------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class Ready:
    """The handshake is done: the peer proved its key (and its witness key, if any)."""

    peer_key: bytes
    role: int
    witness: bytes
    peer_count: int


@dataclass(frozen=True, slots=True)
class Received:
    """New entries from the peer, validated and stored; ``how`` is the message kind."""

    entries: tuple[Entry, ...]
    how: str


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """The peer's catch-up arrived whole; ``cursor`` is where its store stood."""

    cursor: bytes


@dataclass(frozen=True, slots=True)
class CursorReceived:
    """The peer says everything up to ``cursor`` of its store was sent to us."""

    cursor: bytes


@dataclass(frozen=True, slots=True)
class Acked:
    """The server stored durably the first ``count`` entry messages we sent (Entries,
    SyncStep2, Update; counted by ``Connection.entry_messages_sent``)."""

    count: int


@dataclass(frozen=True, slots=True)
class InSync:
    """Both sides hold the same set: the digests agree."""

    digest: bytes
    count: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The conversation ended, by the peer or by us."""

    code: int
    reason: str
    by_peer: bool


Event = Ready | Received | CaughtUp | CursorReceived | Acked | InSync | Closed

_ENTRY_MESSAGES = (Entries, SyncStep2, Update)


@dataclass(slots=True)
class _CatchUp:
    """A catch-up being streamed: the store's chunks still to read, the cursor of when
    it began, and the batch read but not yet sent (the last one goes out marked last)."""

    chunks: Iterator[list[bytes]]
    cursor: bytes
    pending: list[bytes] = field(default_factory=list)


def proof_payload(network: bytes, challenge: bytes, own_challenge: bytes, key: bytes) -> bytes:
    """What a side signs to prove ``key``: the other's challenge, bound to this hello."""
    return network + challenge + own_challenge + key


class Connection:
    """One conversation with one peer about one network (sans-I/O).

    ``client``: this side speaks first. ``key``: the device or node key this side
    proves; ``witness_key``: a witness key it also proves. ``port``: the local replica
    (a server may pass None and a ``resolve`` that picks or creates the port from the
    client's Hello, or returns a CloseCode and reason to refuse it). ``cursor``: what
    the peer told us last time (a ``resolve`` may set ``cursor_from_peer`` once the
    Hello names the peer). ``open_entry``: a device's open, sent in the hello.

    The server side acknowledges the client's entry messages (Entries, SyncStep2,
    Update) with ``Ack``: after each one, when its port stores durably before returning
    (a wallet); with ``defer_acks`` only when the owner calls ``acknowledge`` after its
    own commit (the relay's group commit). A client merges the catch-up it receives in
    batches of ``catch_up_batch_entries`` gathered from consecutive ``Entries``.
    ``random_bytes`` makes the hello's challenge (a simulation passes a seeded one, so
    one seed replays a whole run); the protocol reads no clock.
    """

    def __init__(
        self,
        *,
        client: bool,
        key: SigningKey,
        role: int,
        port: Port | None = None,
        resolve: Callable[[Hello], Port | tuple[CloseCode, str]] | None = None,
        witness_key: SigningKey | None = None,
        open_entry: bytes = b"",
        cursor: bytes = b"",
        check_peer: Callable[[Hello], tuple[CloseCode, str] | None] | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_entries: int = MAX_ENTRIES_PER_MESSAGE,
        defer_acks: bool = False,
        catch_up_window_bytes: int = CATCH_UP_WINDOW_BYTES,
        catch_up_batch_entries: int = CATCH_UP_BATCH_ENTRIES,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        if port is None and resolve is None:
            raise ValueError("a connection needs a port or a way to resolve one")
        if max_message_bytes < MIN_MESSAGE_BYTES:
            raise ValueError(f"max_message_bytes {max_message_bytes} is under the "
                             f"{MIN_MESSAGE_BYTES} a Buckets message needs")
        self.client = client
        self.key = key
        self.public = bytes(key.verify_key)
        self.role = role
        self.port = port
        self.resolve = resolve
        self.witness_key = witness_key
        self.open_entry = open_entry
        self.cursor_from_peer = cursor
        self.check_peer = check_peer
        self.max_message_bytes = max_message_bytes
        self.max_entries = max_entries
        # The caller's randomness, else the system's (looked up now: a simulation seeds it)
        self.challenge = (random_bytes or os.urandom)(32)
        self.state = "new"
        self.peer: Hello | None = None
        self.network: bytes | None = port.genesis.network_id if port else None
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._caught_up = False
        self._peer_digest: Digest | None = None
        self._rounds = 0
        self._digest_replies = 0
        self._in_sync = False
        self._kept: Digest | None = None  # the server's last differing client Digest
        self._want_answered = False
        self._digest_sent = b""
        self._ids_wanted = False  # the client sent Buckets and waits for Ids
        self._fetches_out = 0  # Fetches the client sent whose Digest has not come back
        self._gathered: list[bytes] = []  # catch-up entries not yet merged (a client's)
        self.defer_acks = defer_acks
        self.entry_messages_sent = 0  # Entries, SyncStep2 and Update messages sent
        self.entry_messages_received = 0  # … received and stored (what an Ack counts)
        self._acked_out = 0  # the last count this side acknowledged
        self._acked_in = 0  # the last count the peer acknowledged
        self.catch_up_window_bytes = catch_up_window_bytes
        self.catch_up_batch_entries = catch_up_batch_entries
        self._stream: _CatchUp | None = None  # a catch-up read from the store as it goes
        self._held: list[bytes] = []  # messages that follow the catch-up being streamed
        self._limits(max_message_bytes, max_entries)

    def _limits(self, peer_bytes: int, peer_entries: int) -> None:
        """What this side may send: within its own limits and the peer's (from its hello)."""
        self.send_bytes_max = min(self.max_message_bytes, peer_bytes)
        self.send_entries_max = min(self.max_entries, peer_entries)
        self.chunk_bytes = min(CHUNK_BYTES, self.send_bytes_max // 2)
        self.chunk_entries = min(CHUNK_ENTRIES, self.send_entries_max)

    # ------------------------------------------------------------ driving
    def initiate(self) -> None:
        """The client's first message."""
        assert self.client and self.state == "new" and self.port is not None
        self._send(self._hello())
        self.state = "hello_sent"

    def receive_data(self, data: bytes) -> None:
        """Feed one whole message from the peer. Never raises for what the peer sent."""
        if self.state == "closed":
            return
        if not isinstance(data, bytes):
            if not isinstance(data, bytearray | memoryview):
                self.close(CloseCode.PROTOCOL, f"a {type(data).__name__} message; sync "
                           "messages are binary")
                return
            data = bytes(data)
        try:
            msg = decode(data, max_bytes=self.max_message_bytes, max_entries=self.max_entries)
            self._handle(msg)
        except MessageTooBig as exc:
            self.close(CloseCode.TOO_BIG, str(exc))
        except VersionMismatch as exc:
            self.close(CloseCode.VERSION, str(exc))
        except ProtocolViolation as exc:
            self.close(CloseCode.PROTOCOL, str(exc))
        except GateRefused as exc:
            code = CloseCode.TOO_BIG if exc.reason == "oversized" else CloseCode.REFUSED
            self.close(code, str(exc))
        except BadEntry as exc:
            self.close(CloseCode.REFUSED, str(exc))
        except EncodingError as exc:
            code = CloseCode.PROTOCOL if exc.what == "state vector" else CloseCode.REFUSED
            self.close(code, str(exc))
        except TallyError as exc:
            self.close(CloseCode.REFUSED, str(exc))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a bug here (or a Rust panic), never the peer's doing
            self.close(CloseCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    def data_to_send(self) -> list[bytes]:
        """Messages to write to the peer, in order. A catch-up that streams hands out
        one window (``CATCH_UP_WINDOW_BYTES``) when it begins and one more at each
        ``next_window``: whatever else the conversation does in between reads none of
        it, so what waits to be written stays bounded however often this is called."""
        out, self._out = self._out, []
        return out

    def next_window(self) -> None:
        """Read the next window of a streaming catch-up (``streaming``) for
        ``data_to_send``: the transport calls it once what it had is written."""
        if self._stream is not None:
            self._pump()

    @property
    def streaming(self) -> bool:
        """True while a catch-up has more to hand out (``next_window``)."""
        return self._stream is not None

    def events_received(self) -> list[Event]:
        """What happened since the last call."""
        out, self._events = self._events, []
        return out

    def close(self, code: int = CloseCode.DONE, reason: str = "bye") -> None:
        """End the conversation, telling the peer why."""
        if self.state == "closed":
            return
        self._stream = None  # what the catch-up had left is not sent
        self._out.extend(self._held)
        self._held = []
        self._send(Close(int(code), reason))
        self.state = "closed"
        self._events.append(Closed(int(code), reason, by_peer=False))

    @property
    def entry_messages_acked(self) -> int:
        """How many of the entry messages we sent the peer acknowledged (``Ack``)."""
        return self._acked_in

    @property
    def unacknowledged(self) -> bool:
        """True when entry messages were received that no Ack covers yet."""
        return self.entry_messages_received > self._acked_out

    def acknowledge(self) -> None:
        """Send an Ack for every entry message received so far (server side; once what
        they carried is durable)."""
        if self.client or self.state == "closed" or not self.unacknowledged:
            return
        self._acked_out = self.entry_messages_received
        self._send(Ack(self._acked_out))

    @property
    def live(self) -> bool:
        """True once the handshake is done and until the conversation ends."""
        return self.state == "ready"

    def send_entries(self, entries: Iterable[Entry], *, cursor: bytes = b"") -> None:
        """Send new local entries (live), as Yjs updates; then where our store stands."""
        if not self.live:
            return
        bits = getattr(self.port, "item_bits", ITEM_ID_BITS)
        for update in self.update_payloads(item_rows(entries, bits)):
            self._send(Update(update))
        if cursor:
            self._send(Cursor(cursor))

    def update_payloads(self, rows: Iterable[ItemRow]) -> Iterator[bytes]:
        """Canonical updates of the item rows, in order, each within this peer's chunk
        limits and with no item id twice (two entries sharing one go in separate
        updates). The caller sends each as an ``Update``."""
        batch: list[ItemRow] = []
        used: set[int] = set()
        size = 0
        for row in rows:
            if batch and (row[0] in used or len(batch) >= self.chunk_entries
                          or size + len(row[1]) > self.chunk_bytes):
                yield join_sections(batch)
                batch, used, size = [], set(), 0
            used.add(row[0])
            batch.append(row)
            size += len(row[1])
        if batch:
            yield join_sections(batch)

    # ------------------------------------------------------------ internals
    def _send(self, msg: Message) -> None:
        if self._stream is not None and not isinstance(msg, Ack | Close):
            self._held.append(self._encode_counted(msg))  # after the catch-up, in order
            return
        self._out.append(self._encode_counted(msg))

    def _encode_counted(self, msg: Message) -> bytes:
        if isinstance(msg, _ENTRY_MESSAGES):
            self.entry_messages_sent += 1
        return encode(msg)

    def _pump(self) -> None:
        """Read the streaming catch-up on, up to ``CATCH_UP_WINDOW_BYTES`` of messages
        (its last ``Entries`` carries the cursor of when it began), then what waited.
        ``catch_up_window_bytes`` (by default ``CATCH_UP_WINDOW_BYTES``) is the window."""
        s = self._stream
        assert s is not None
        queued = 0
        while queued < self.catch_up_window_bytes:
            chunk = next(s.chunks, None)
            if chunk is None:
                self._stream = None
                self._out.append(self._encode_counted(
                    Entries(tuple(s.pending), last=True, cursor=s.cursor)))
                self._out.extend(self._held)
                self._held = []
                return
            for batch in self._batches(chunk):
                if s.pending:
                    msg = self._encode_counted(Entries(tuple(s.pending)))
                    self._out.append(msg)
                    queued += len(msg)
                s.pending = batch

    def encode_update(self, update: bytes) -> bytes:
        """An Update message this side's owner sends itself (the relay's fan-out), counted
        like one sent through the connection."""
        self.entry_messages_sent += 1
        return encode(Update(update))

    def _hello(self) -> Hello:
        assert self.port is not None
        return Hello(
            PROTOCOL_VERSION, self.role, self.port.genesis.network_id, self.public,
            self.challenge, bytes(self.witness_key.verify_key) if self.witness_key else b"",
            self.port.genesis.raw if self.client else b"", self.open_entry, self.port.count(),
            self.max_message_bytes, self.max_entries,
        )

    def _proof(self, peer_challenge: bytes) -> Proof:
        assert self.network is not None
        payload = proof_payload(self.network, peer_challenge, self.challenge, self.public)
        wsig = b""
        if self.witness_key is not None:
            wpayload = proof_payload(self.network, peer_challenge, self.challenge,
                                     bytes(self.witness_key.verify_key))
            wsig = sign_message(self.witness_key, Kind.HELLO, wpayload)
        return Proof(sign_message(self.key, Kind.HELLO, payload), wsig)

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Close):
            self.state = "closed"
            self._events.append(Closed(msg.code, msg.reason, by_peer=True))
            return
        if isinstance(msg, Hello):
            self._on_hello(msg)
        elif isinstance(msg, Proof):
            self._on_proof(msg)
        elif self.state != "ready":
            raise ProtocolViolation(f"{type(msg).__name__} before the handshake finished")
        else:
            self._on_ready_message(msg)
            if isinstance(msg, _ENTRY_MESSAGES) and self.state == "ready":
                self.entry_messages_received += 1
                if not self.client and not self.defer_acks:
                    self.acknowledge()

    def _on_hello(self, h: Hello) -> None:
        expected = "hello_sent" if self.client else "new"
        if self.state != expected:
            raise ProtocolViolation("a second hello (replayed?) in one conversation")
        if h.version != PROTOCOL_VERSION:  # pragma: no cover - decode refuses it first
            raise VersionMismatch(f"protocol version {h.version}; this side speaks "
                                  f"{PROTOCOL_VERSION}")
        if h.genesis:
            try:
                named = parse_genesis(h.genesis).network_id
            except EncodingError as exc:
                raise ProtocolViolation(f"the genesis in the hello: {exc}") from None
            if named != h.network:
                self.close(CloseCode.WRONG_NETWORK,
                           "the genesis in the hello is another network's than it names")
                return
        if self.client:
            if h.network != self.network:
                self.close(CloseCode.WRONG_NETWORK, "the peer answered for another network")
                return
        else:
            if self.port is None:
                assert self.resolve is not None
                got = self.resolve(h)
                if isinstance(got, tuple):
                    self.close(*got)
                    return
                self.port = got
            if h.network != self.port.genesis.network_id:
                self.close(CloseCode.WRONG_NETWORK, "this side serves another network")
                return
            self.network = h.network
        problem = self._check_open(h)
        if problem is None and self.check_peer is not None:
            problem = self.check_peer(h)
        if problem is not None:
            self.close(*problem)
            return
        self.peer = h
        self._limits(h.max_bytes, h.max_entries)
        if self.client:
            self.state = "hello_received"
        else:
            self._send(self._hello())
            self._send(self._proof(h.challenge))
            self.state = "proof_wanted"

    def _check_open(self, h: Hello) -> tuple[CloseCode, str] | None:
        if h.role != ROLE_DEVICE:
            return None
        if not h.open:
            return None  # a device with no open yet may still fetch (a new device)
        try:
            ob = parse_entry(h.open)
        except EncodingError as exc:
            return CloseCode.BAD_OPEN, f"the device's open does not verify: {exc.reason}"
        if not isinstance(ob, Block) or ob.kind != Kind.OPEN or ob.device != h.key:
            return CloseCode.BAD_OPEN, "the open in the hello is not this device's open"
        if ob.network != h.network:
            return CloseCode.BAD_OPEN, "the device's open belongs to another network"
        return None

    def _on_proof(self, p: Proof) -> None:
        expected = "hello_received" if self.client else "proof_wanted"
        if self.state != expected or self.peer is None or self.network is None:
            raise ProtocolViolation("a proof out of turn")
        h = self.peer
        payload = proof_payload(self.network, self.challenge, h.challenge, h.key)
        if not verify_sig(h.key, Kind.HELLO, payload, p.signature):
            self.close(CloseCode.BAD_PROOF, "the peer's key proof does not verify")
            return
        if h.witness:
            wpayload = proof_payload(self.network, self.challenge, h.challenge, h.witness)
            if not verify_sig(h.witness, Kind.HELLO, wpayload, p.witness_signature):
                self.close(CloseCode.BAD_PROOF, "the peer's witness key proof does not verify")
                return
        elif p.witness_signature:
            raise ProtocolViolation("a witness signature, but the hello named no witness key")
        if self.client:
            self._send(self._proof(h.challenge))
        self.state = "ready"
        self._events.append(Ready(h.key, h.role, h.witness, h.count))
        assert self.port is not None
        cursor = self.cursor_from_peer
        # A cursor, or a peer that holds nothing, needs no state vector (~9 bytes an entry).
        sv = b"" if cursor or h.count == 0 else self.port.state_vector()
        if len(sv) > self.send_bytes_max - 1024:
            sv = b""  # over what a message may carry: the peer sends everything instead
        self._send(Want(cursor, self.port.count(), sv))

    def _on_ready_message(self, msg: Message) -> None:
        port = self.port
        assert port is not None
        if isinstance(msg, Want):
            if self._want_answered:
                raise ProtocolViolation("a second Want in one conversation")
            self._want_answered = True
            self._answer_want(msg)
        elif isinstance(msg, Entries):
            if self.client and not self._caught_up:  # no Ack owed: gather a batch
                self._gathered.extend(msg.bodies)
                if len(self._gathered) < self.catch_up_batch_entries and not msg.last:
                    return
                bodies, self._gathered = self._gathered, []
            else:
                bodies = list(msg.bodies)
            got = port.add_raw(bodies)
            if got:
                self._events.append(Received(tuple(got), "entries"))
                self._recheck(live=False)
            if msg.last and self._fetches_out and self._caught_up:
                self._fetches_out -= 1  # the whole answer to one of our Fetches
                if not self._fetches_out:
                    self._ids_wanted = False  # the round is over; its Digest comes next
            elif msg.last:
                self._finish_catch_up(msg.cursor)
        elif isinstance(msg, SyncStep2):
            got = port.apply_update(msg.update)
            if got:
                self._events.append(Received(tuple(got), "sync"))
            self._finish_catch_up(msg.cursor)
        elif isinstance(msg, Update):
            got = port.apply_update(msg.update)
            if got:
                self._events.append(Received(tuple(got), "update"))
                self._recheck(live=True)
        elif isinstance(msg, Cursor):
            self._events.append(CursorReceived(msg.cursor))
        elif isinstance(msg, Ack):
            if not self.client:
                raise ProtocolViolation("only the server acknowledges: Ack from the client")
            if not self._acked_in <= msg.count <= self.entry_messages_sent:
                raise ProtocolViolation(
                    f"Ack of {msg.count} entry messages; {self.entry_messages_sent} were "
                    f"sent and {self._acked_in} acknowledged before")
            self._acked_in = msg.count
            self._events.append(Acked(msg.count))
        elif isinstance(msg, Digest):
            if self._ids_wanted:
                return  # a round is under way: the Digest after its last Fetch decides
            self._peer_digest = msg
            self._compare()
        elif isinstance(msg, Buckets):
            if self.client:
                raise ProtocolViolation("only the client reconciles: Buckets from the server")
            self._rounds += 1
            if self._rounds > RECONCILE_ROUNDS_MAX:
                raise ProtocolViolation(f"more than {RECONCILE_ROUNDS_MAX} reconciliation "
                                        "rounds in one conversation")
            self._answer_buckets(msg)
        elif isinstance(msg, Ids):
            if not self.client:
                raise ProtocolViolation("only the client reconciles: Ids from the client")
            if not self._ids_wanted:
                raise ProtocolViolation("Ids that no Buckets asked for")
            self._on_ids(msg)
        elif isinstance(msg, Fetch):
            if self.client:
                raise ProtocolViolation("only the server answers a fetch")
            chunks = list(self._batches(port.bodies(msg.ids))) or [[]]
            for chunk in chunks[:-1]:
                self._send(Entries(tuple(chunk)))
            self._send(Entries(tuple(chunks[-1]), last=True))
            self._send_digest()
        else:
            raise ProtocolViolation(f"unexpected {type(msg).__name__}")

    def _answer_want(self, w: Want) -> None:
        """Catch the peer up: the tail after its cursor, everything (bulk), or y-sync."""
        port = self.port
        assert port is not None
        cursor = port.cursor()
        chunks = port.entries_since(w.cursor) if w.cursor else None
        if chunks is None and (w.count == 0 or not w.state_vector):
            chunks = port.entries_since(b"")  # an empty peer, or a cursor not ours
        if chunks is not None:
            assert self._stream is None, "one catch-up per conversation"
            self._stream = _CatchUp(iter(chunks), cursor)
            self._pump()  # the first window; the rest at each next_window
            return
        update = port.update_since(w.state_vector)
        parts = list(self.update_payloads(
            (i.client, item_section(i.client, i.key, i.value))
            for i in decode_update(update, max_bytes=len(update), max_items=len(update))
        )) if len(update) > self.chunk_bytes else [update]
        for part in parts[:-1]:
            self._send(Update(part))
        self._send(SyncStep2(parts[-1], cursor))

    def _batches(self, bodies: list[bytes]) -> Iterator[list[bytes]]:
        """Entry bodies cut into messages within the chunk limits."""
        batch: list[bytes] = []
        size = 0
        for b in bodies:
            if batch and (len(batch) >= self.chunk_entries
                          or size + len(b) + 2 > self.chunk_bytes):
                yield batch
                batch, size = [], 0
            batch.append(b)
            size += len(b) + 2
        if batch:
            yield batch

    def _answer_buckets(self, msg: Buckets) -> None:
        """List every id of each bucket whose digest differs, in messages within limits."""
        port = self.port
        assert port is not None
        room = max(1, (self.send_bytes_max - 64) // 32)
        bitmap = bytearray(32)
        ids: list[bytes] = []
        for i, (a, b) in enumerate(zip(port.bucket_sums(), msg.sums, strict=True)):
            if a == b:
                continue
            more = port.bucket_ids(i)
            if ids and len(ids) + len(more) > room:
                self._send(Ids(bytes(bitmap), tuple(ids)))
                bitmap, ids = bytearray(32), []
            bitmap[i // 8] |= 1 << (i % 8)
            ids.extend(more)
        self._send(Ids(bytes(bitmap), tuple(ids)))

    def _on_ids(self, msg: Ids) -> None:
        """Send what the server lacks in the listed buckets; fetch what we lack."""
        port = self.port
        assert port is not None
        theirs = set(msg.ids)
        if any(not msg.has(i[0]) for i in theirs):
            raise ProtocolViolation("an id outside the buckets it was listed in")
        mine = {i for b in range(256) if msg.has(b) for i in port.bucket_ids(b)}
        for chunk in self._batches(port.bodies(mine - theirs)):
            self._send(Entries(tuple(chunk)))
        lack = sorted(theirs - mine)
        room = max(1, min(self.send_entries_max, (self.send_bytes_max - 64) // 32))
        for i in range(0, max(len(lack), 1), room):
            self._send(Fetch(tuple(lack[i : i + room])))
            self._fetches_out += 1

    def _finish_catch_up(self, cursor: bytes) -> None:
        port = self.port
        assert port is not None
        if cursor:
            self._events.append(CursorReceived(cursor))
        if not self._caught_up:
            self._caught_up = True
            self._events.append(CaughtUp(cursor))
            self._send_digest()
            self._compare()

    def _reply_digest(self) -> None:
        if self._digest_replies < DIGEST_REPLIES_MAX:
            self._digest_replies += 1
            self._send_digest()

    def _send_digest(self) -> None:
        port = self.port
        assert port is not None
        self._digest_sent = port.digest()
        self._send(Digest(self._digest_sent, port.count()))

    def _compare(self) -> None:
        port = self.port
        if self._peer_digest is None or not self._caught_up or port is None:
            return
        peer, self._peer_digest = self._peer_digest, None
        if peer.digest == port.digest():
            self._agree(peer)
        elif not self.client:
            # Entries in flight may explain it: keep it, to compare again when entries
            # from the client arrive; and show the client ours (the client decides).
            self._kept = peer
            self._reply_digest()
        elif self._rounds < RECONCILE_ROUNDS_MAX:
            # Item ids collide (53 bits), so y-sync may miss entries: compare buckets.
            self._rounds += 1
            self._ids_wanted = True
            self._send(Buckets(tuple(port.bucket_sums())))

    def _recheck(self, *, live: bool) -> None:
        """The server stored entries from the client after a Digest of the client's
        differed: the two sets may agree now (reconciliation), or the client's digest
        may have lacked what was in flight (live)."""
        port = self.port
        if self.client or self._in_sync or self._kept is None or port is None:
            return
        if port.digest() == self._kept.digest:
            self._agree(self._kept)
        elif live:
            self._reply_digest()

    def _agree(self, peer: Digest) -> None:
        port = self.port
        assert port is not None
        self._kept = None
        if not self._in_sync:
            self._in_sync = True
            self._events.append(InSync(peer.digest, peer.count))
        if self.client and self._digest_sent != peer.digest:
            self._send_digest()  # the server saw another digest of ours: tell it
        # The peer holds all we hold: next time it may resume from here.
        self._send(Cursor(port.cursor()))

