"""Sync messages: small frozen dataclasses and their one binary encoding.

Every message is one websocket binary message (or one length-prefixed record of a
stream): ``type:u8`` then its fields, integers big-endian, variable fields with a length
prefix. ``decode`` refuses unknown types, short or long input, and anything over the
limits given: it takes only what ``encode`` writes, so whatever decodes encodes back to
the same bytes. ``docs/protocol.md`` ("Sync protocol") is the specification.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sync.errors import ProtocolViolation

PROTOCOL_VERSION = 2

ROLE_DEVICE = 1
ROLE_NODE = 2
ROLES = {ROLE_DEVICE: "device", ROLE_NODE: "node"}


@dataclass(frozen=True, slots=True)
class Hello:
    """Opens a conversation: who I am, which network, a fresh challenge for you.

    ``key`` is the device key (role device) or the node key (role node); ``witness`` a
    witness key the sender also proves (or empty); ``open`` a device's ``open`` entry so
    a node that never saw the device can check it; ``genesis`` the signed genesis when
    the other side may lack it; ``count`` how many entries the sender holds;
    ``max_bytes`` and ``max_entries`` the largest message and the most entries (or
    fetched ids) in one message the sender accepts: the other side sends no more.
    """

    version: int
    role: int
    network: bytes
    key: bytes
    challenge: bytes
    witness: bytes = b""
    genesis: bytes = b""
    open: bytes = b""
    count: int = 0
    max_bytes: int = 8 << 20
    max_entries: int = 20_000


@dataclass(frozen=True, slots=True)
class Proof:
    """Signatures over the other side's challenge: by ``key``, and by ``witness`` if any."""

    signature: bytes
    witness_signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Want:
    """What I have of yours: a cursor you gave me before (or empty), my entry count and
    my Doc's state vector (empty when the cursor suffices)."""

    cursor: bytes
    count: int
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class Entries:
    """Raw signed entries, dependencies first: bulk catch-up and reconciliation.

    ``last`` closes a catch-up; ``cursor`` (with ``last``) is where the sender's store
    stood, to give back in a later ``Want``.
    """

    bodies: tuple[bytes, ...]
    last: bool = False
    cursor: bytes = b""


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """The Yjs update the other side lacks (answer to a ``Want`` without cursor)."""

    update: bytes
    cursor: bytes = b""


@dataclass(frozen=True, slots=True)
class Update:
    """New entries as a Yjs update (live)."""

    update: bytes


@dataclass(frozen=True, slots=True)
class Digest:
    """The sender's entry-set digest and entry count, after applying the catch-up."""

    digest: bytes
    count: int


@dataclass(frozen=True, slots=True)
class Buckets:
    """Reconciliation, step 1: the digest of each of 256 buckets (by an id's first byte)."""

    sums: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ids:
    """Reconciliation, step 2: every id the sender holds in the buckets whose bits are
    set in ``buckets`` (a 256-bit map, bucket i = bit i of byte i // 8)."""

    buckets: bytes
    ids: tuple[bytes, ...]

    def has(self, bucket: int) -> bool:
        """Whether the bucket is listed."""
        return bool(self.buckets[bucket // 8] >> (bucket % 8) & 1)


@dataclass(frozen=True, slots=True)
class Fetch:
    """Reconciliation, step 3: ids the sender lacks; answered with ``Entries``."""

    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where my store stands now: everything up to it has been sent to you."""

    cursor: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """The first ``count`` Entries, SyncStep2 and Update messages you sent in this
    conversation are stored durably here (sent by the server side only)."""

    count: int


@dataclass(frozen=True, slots=True)
class Close:
    """The end of a conversation, with a code and a reason a person can read."""

    code: int
    reason: str


Message = (
    Hello | Proof | Want | Entries | SyncStep2 | Update | Digest | Buckets | Ids | Fetch
    | Cursor | Ack | Close
)

_TYPES: dict[type, int] = {
    Hello: 1, Proof: 2, Want: 3, Entries: 4, SyncStep2: 5, Update: 6, Digest: 7,
    Buckets: 8, Ids: 9, Fetch: 10, Cursor: 11, Ack: 12, Close: 127,
}
_BY_CODE = {v: k for k, v in _TYPES.items()}
MESSAGE_KINDS = {code: cls.__name__ for cls, code in _TYPES.items()}
"""Each message kind's name by its type byte (the first byte of an encoded message)."""

MIN_MESSAGE_BYTES = 9_000
"""The smallest message limit a side may have: room for every message (Buckets is 8,193)."""
CURSOR_BYTES_MAX = 64
ENTRY_BYTES_MAX = 1024
GENESIS_BYTES_MAX = 4096
REASON_BYTES_MAX = 500


class MessageTooBig(ProtocolViolation):
    """A message, or a count in it, over this side's limits (closes with TOO_BIG)."""


class VersionMismatch(ProtocolViolation):
    """A hello of a protocol version this side does not speak (closes with VERSION)."""


def _var(b: bytes, width: int = 4) -> bytes:
    return struct.pack(">I" if width == 4 else ">H", len(b)) + b


def encode(msg: Message) -> bytes:
    """The bytes of one message."""
    t = bytes((_TYPES[type(msg)],))
    if isinstance(msg, Hello):
        return t + b"".join([
            struct.pack(">BB", msg.version, msg.role), msg.network, msg.key, msg.challenge,
            _var(msg.witness, 2), _var(msg.genesis, 2), _var(msg.open, 2),
            struct.pack(">QII", msg.count, msg.max_bytes, msg.max_entries),
        ])
    if isinstance(msg, Proof):
        return t + msg.signature + _var(msg.witness_signature, 2)
    if isinstance(msg, Want):
        return t + _var(msg.cursor, 2) + struct.pack(">Q", msg.count) + _var(msg.state_vector)
    if isinstance(msg, Entries):
        parts = [struct.pack(">BI", int(msg.last), len(msg.bodies)), _var(msg.cursor, 2)]
        parts += [_var(b, 2) for b in msg.bodies]
        return t + b"".join(parts)
    if isinstance(msg, SyncStep2):
        return t + _var(msg.update) + _var(msg.cursor, 2)
    if isinstance(msg, Update):
        return t + _var(msg.update)
    if isinstance(msg, Digest):
        return t + msg.digest + struct.pack(">Q", msg.count)
    if isinstance(msg, Buckets):
        return t + b"".join(msg.sums)
    if isinstance(msg, Ids):
        return t + msg.buckets + struct.pack(">I", len(msg.ids)) + b"".join(msg.ids)
    if isinstance(msg, Fetch):
        return t + struct.pack(">I", len(msg.ids)) + b"".join(msg.ids)
    if isinstance(msg, Cursor):
        return t + _var(msg.cursor, 2)
    if isinstance(msg, Ack):
        return t + struct.pack(">Q", msg.count)
    if isinstance(msg, Close):
        # cut to the limit on a character boundary: the reason stays valid UTF-8
        reason = msg.reason.encode()[:REASON_BYTES_MAX].decode("utf-8", "ignore").encode()
        return t + struct.pack(">H", msg.code) + _var(reason, 2)
    raise TypeError(f"not a sync message: {msg!r}")


class _R:
    def __init__(self, data: bytes) -> None:
        self.d = data
        self.p = 1

    def take(self, n: int, what: str) -> bytes:
        if self.p + n > len(self.d):
            raise ProtocolViolation(f"truncated message: {what} is cut short")
        out = self.d[self.p : self.p + n]
        self.p += n
        return out

    def u(self, fmt: str, what: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def var(self, what: str, limit: int, width: int = 4) -> bytes:
        n = self.u(">I" if width == 4 else ">H", what)
        if n > limit:
            raise ProtocolViolation(f"{what} is {n} bytes, limit {limit}")
        return self.take(n, what)

    def end(self) -> None:
        if self.p != len(self.d):
            raise ProtocolViolation(f"{len(self.d) - self.p} trailing bytes after the message")


def decode(data: bytes, *, max_bytes: int, max_entries: int) -> Message:
    """Parse one message; ``ProtocolViolation`` says what is wrong with it."""
    if len(data) > max_bytes:
        raise MessageTooBig(f"message of {len(data)} bytes, limit {max_bytes}")
    if not data:
        raise ProtocolViolation("empty message")
    cls = _BY_CODE.get(data[0])
    if cls is None:
        raise ProtocolViolation(f"unknown message type {data[0]}")
    r = _R(data)
    msg: Message
    if cls is Hello:
        version = r.u(">B", "version")
        if version != PROTOCOL_VERSION:  # a later version's hello may not parse as ours
            raise VersionMismatch(f"protocol version {version}; this side speaks "
                                  f"{PROTOCOL_VERSION}")
        role = r.u(">B", "role")
        if role not in ROLES:
            raise ProtocolViolation(f"unknown role {role} in the hello")
        msg = Hello(version, role, r.take(32, "network"), r.take(32, "key"),
                    r.take(32, "challenge"), r.var("witness", 32, 2),
                    r.var("genesis", GENESIS_BYTES_MAX, 2), r.var("open", ENTRY_BYTES_MAX, 2),
                    r.u(">Q", "count"), r.u(">I", "max bytes"), r.u(">I", "max entries"))
        if msg.max_bytes < MIN_MESSAGE_BYTES or msg.max_entries < 1:
            raise ProtocolViolation(f"a hello accepting {msg.max_bytes} bytes and "
                                    f"{msg.max_entries} entries a message; at least "
                                    f"{MIN_MESSAGE_BYTES} and 1")
        if msg.witness and len(msg.witness) != 32:
            raise ProtocolViolation("witness key must be 32 bytes")
    elif cls is Proof:
        msg = Proof(r.take(64, "signature"), r.var("witness signature", 64, 2))
        if msg.witness_signature and len(msg.witness_signature) != 64:
            raise ProtocolViolation("witness signature must be 64 bytes")
    elif cls is Want:
        msg = Want(r.var("cursor", CURSOR_BYTES_MAX, 2), r.u(">Q", "count"),
                   r.var("state vector", max_bytes))
    elif cls is Entries:
        last, n = r.u(">B", "last"), r.u(">I", "count")
        if last > 1:
            raise ProtocolViolation(f"last flag {last}, not 0 or 1")
        if n > max_entries:
            raise MessageTooBig(f"{n} entries in one message, limit {max_entries}")
        cursor = r.var("cursor", CURSOR_BYTES_MAX, 2)
        msg = Entries(tuple(r.var("entry", ENTRY_BYTES_MAX, 2) for _ in range(n)),
                      bool(last), cursor)
    elif cls is SyncStep2:
        msg = SyncStep2(r.var("update", max_bytes), r.var("cursor", CURSOR_BYTES_MAX, 2))
    elif cls is Update:
        msg = Update(r.var("update", max_bytes))
    elif cls is Digest:
        msg = Digest(r.take(32, "digest"), r.u(">Q", "count"))
    elif cls is Buckets:
        msg = Buckets(tuple(r.take(32, "bucket sum") for _ in range(256)))
    elif cls is Ids:
        buckets, n = r.take(32, "buckets"), r.u(">I", "count")
        if n * 32 > max_bytes:
            raise MessageTooBig(f"{n} ids in one message, over {max_bytes} bytes")
        msg = Ids(buckets, tuple(r.take(32, "id") for _ in range(n)))
    elif cls is Fetch:
        n = r.u(">I", "count")
        if n > max_entries:
            raise MessageTooBig(f"{n} ids in one fetch, limit {max_entries}")
        msg = Fetch(tuple(r.take(32, "id") for _ in range(n)))
    elif cls is Cursor:
        msg = Cursor(r.var("cursor", CURSOR_BYTES_MAX, 2))
    elif cls is Ack:
        msg = Ack(r.u(">Q", "count"))
    else:
        code = r.u(">H", "code")
        try:
            reason = r.var("reason", REASON_BYTES_MAX, 2).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("a close reason that is not UTF-8") from None
        msg = Close(code, reason)
    r.end()
    return msg
