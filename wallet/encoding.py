"""The canonical, versioned byte encoding of every signed thing: blocks, votes, the genesis.

Every signed message starts with the same three fields, so no signature made for one
purpose verifies as another::

    magic   2 bytes  b"TS"
    version u8       2
    kind    u8       Kind

Integers are fixed-width big-endian; variable fields carry a length prefix; no field is
optional in the bytes. One value has exactly one encoding, and ``parse_entry`` refuses
every byte string that ``encode`` would not have produced (``docs/protocol.md``).
An entry's bytes are ``body || signature`` (Ed25519 over ``body``); its id is
BLAKE2b-256 of those bytes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from wallet.errors import EncodingError

MAGIC = b"TS"
VERSION = 2
"""The format version: 2 added the device's own signature to every ``open``."""
KEY_BYTES = 32
ID_BYTES = 32
SIG_BYTES = 64
ZERO_ID = bytes(ID_BYTES)

AMOUNT_MAX = 2**63 - 1
LABEL_BYTES_MAX = 64
REQUEST_ID_BYTES_MAX = 32
KEY_TEXTS_CACHED = 4096
"""Key texts kept by ``key_text`` (the most recently used)."""
MEMO_BYTES_MAX = 512
ENTRY_BYTES_MAX = 1024
WITNESSES_MAX = 64
NAME_BYTES_MAX = 64


class Kind(IntEnum):
    """What a signed message is; the fourth byte of every one."""

    OPEN = 1
    SEND = 2
    ISSUE = 3
    RECEIVE = 4
    REVOKE = 5
    VOTE = 16
    GENESIS = 32
    PAIRING = 33
    HELLO = 34


BLOCK_KINDS = frozenset({Kind.OPEN, Kind.SEND, Kind.ISSUE, Kind.RECEIVE, Kind.REVOKE})
PAYMENT_KINDS = frozenset({Kind.SEND, Kind.ISSUE})


def entry_hash(data: bytes) -> bytes:
    """The id of an entry: BLAKE2b-256 of its signed bytes."""
    return hashlib.blake2b(data, digest_size=ID_BYTES).digest()


def id_text(entry_id: bytes) -> str:
    """An entry id as text: unpadded base64url, 43 characters (the Doc's map key)."""
    return base64.urlsafe_b64encode(entry_id).rstrip(b"=").decode()


def id_from_text(text: str) -> bytes:
    """Parse an entry id written by ``id_text``."""
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (ValueError, TypeError) as exc:
        raise EncodingError("entry id", f"not base64url: {text!r}") from exc
    if len(raw) != ID_BYTES or id_text(raw) != text:
        raise EncodingError("entry id", f"not a 43-character id: {text!r}")
    return raw


@functools.lru_cache(maxsize=KEY_TEXTS_CACHED)
def key_text(key: bytes) -> str:
    """A public key as text: lowercase unpadded base32, 52 characters (cached: a report
    names the same few devices again and again, and base32 is slow in Python)."""
    return base64.b32encode(key).decode().rstrip("=").lower()


def key_from_text(text: str, what: str = "key") -> bytes:
    """Parse a public key written by ``key_text``."""
    t = text.strip().upper()
    try:
        raw = base64.b32decode(t + "=" * (-len(t) % 8))
    except (ValueError, TypeError) as exc:
        raise EncodingError(what, f"not base32: {text!r}") from exc
    if len(raw) != KEY_BYTES:
        raise EncodingError(what, f"expected a 52-character key, got {len(text)} characters")
    return raw


SHORT_CHARS = 8
"""How many characters of a key's or an id's text its short form keeps."""


def short(key: bytes) -> str:
    """The first 8 characters of a key's text: enough for a person to tell devices apart."""
    return key_text(key)[:SHORT_CHARS]


def short_id(entry_id: bytes) -> str:
    """The first 8 characters of an id's text (an entry id, a network id).

    The same characters a person sees at the start of the full id, so a short network id
    in an error is the start of what ``tally network show`` prints.
    """
    return id_text(entry_id)[:SHORT_CHARS]


class _Reader:
    """Reads fixed fields off a byte string and refuses short or long input."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, field_name: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise EncodingError(self.what, f"truncated in field {field_name}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def u16(self, name: str) -> int:
        return struct.unpack(">H", self.take(2, name))[0]

    def u64(self, name: str) -> int:
        return struct.unpack(">Q", self.take(8, name))[0]

    def var8(self, name: str, limit: int) -> bytes:
        n = self.u8(name)
        if n > limit:
            raise EncodingError(self.what, f"{name} is {n} bytes, limit {limit}")
        return self.take(n, name)

    def var16(self, name: str, limit: int) -> bytes:
        n = self.u16(name)
        if n > limit:
            raise EncodingError(self.what, f"{name} is {n} bytes, limit {limit}")
        return self.take(n, name)

    def text(self, name: str, limit: int) -> str:
        raw = self.var8(name, limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError(self.what, f"{name} is not UTF-8") from exc

    def end(self) -> None:
        if self.pos != len(self.data):
            raise EncodingError(self.what, f"{len(self.data) - self.pos} trailing bytes")


def _header(kind: Kind) -> bytes:
    return MAGIC + bytes((VERSION, kind))


def _read_header(r: _Reader) -> Kind:
    if r.take(2, "magic") != MAGIC:
        raise EncodingError(r.what, "bad magic (not a Tallystick message)")
    version = r.u8("version")
    if version != VERSION:
        raise EncodingError(
            r.what, f"unknown format version {version} (this build reads {VERSION})"
        )
    raw_kind = r.u8("kind")
    try:
        return Kind(raw_kind)
    except ValueError as exc:
        raise EncodingError(r.what, f"unknown kind {raw_kind}") from exc


def _verify(key: bytes, body: bytes, sig: bytes) -> bool:
    if len(key) != KEY_BYTES or len(sig) != SIG_BYTES:
        return False
    try:
        crypto_sign_open(bytes(sig) + bytes(body), bytes(key))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def verify_signed(key: bytes, signed: bytes) -> bool:
    """Check one signature given as ``signature || body`` (what libsodium takes).

    The cheapest call there is: no key object, no copies beyond libsodium's own. It
    releases the GIL while it works, so threads verify in parallel.
    """
    try:
        crypto_sign_open(signed, key)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Block:
    """One block of a device's chain; which fields matter depends on ``kind``.

    ``account`` is the signer of an ``open`` (the device's account, or the issuer) and
    of a ``revoke``; an ``open`` also carries ``device_sig``, the device key's signature
    over ``open_payload`` (the device's pairing request signature), so nobody can open a
    device key under an account the device did not ask to join; ``to_account`` and
    ``to_device`` name the recipient of a payment or the sibling a revoke passes the
    balance to; ``claim`` is the id a ``receive`` claims.
    """

    kind: Kind
    network: bytes
    device: bytes
    seq: int
    prev: bytes = ZERO_ID
    account: bytes = b""
    label: str = ""
    to_account: bytes = b""
    to_device: bytes = b""
    amount: int = 0
    request_id: bytes = b""
    memo: bytes = b""
    claim: bytes = b""
    device_sig: bytes = b""
    signature: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)
    id: bytes = field(default=b"", compare=False, repr=False)

    @property
    def signer(self) -> bytes:
        """The key whose signature the block carries: the account's for open and revoke."""
        return self.account if self.kind in (Kind.OPEN, Kind.REVOKE) else self.device

    def body(self) -> bytes:
        """The canonical bytes that are signed."""
        out = [
            _header(self.kind), self.network, self.device, struct.pack(">Q", self.seq), self.prev
        ]
        k = self.kind
        if k == Kind.OPEN:
            label = self.label.encode()
            out += [self.account, bytes((len(label),)), label, self.device_sig]
        elif k in PAYMENT_KINDS:
            out += [
                self.to_account,
                self.to_device,
                struct.pack(">Q", self.amount),
                bytes((len(self.request_id),)),
                self.request_id,
                struct.pack(">H", len(self.memo)),
                self.memo,
            ]
        elif k == Kind.RECEIVE:
            out += [self.claim]
        elif k == Kind.REVOKE:
            out += [self.account, self.to_device]
        return b"".join(out)

    def signed(self, key: SigningKey) -> Block:
        """This block signed by ``key``, with its bytes and id; checked like a parsed one."""
        body = self.body()
        sig = key.sign(body).signature
        return parse_entry(body + sig)  # type: ignore[return-value]

    def is_payment(self) -> bool:
        """True for a send or an issue: a block that moves money to a recipient device."""
        return self.kind in PAYMENT_KINDS


@dataclass(frozen=True, slots=True)
class Vote:
    """A witness's signature over (network, device, seq, block id); not part of a chain."""

    network: bytes
    device: bytes
    seq: int
    block_id: bytes
    witness: bytes
    signature: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)
    id: bytes = field(default=b"", compare=False, repr=False)

    kind = Kind.VOTE

    @property
    def signer(self) -> bytes:
        """The witness key that signs the vote."""
        return self.witness

    def body(self) -> bytes:
        """The canonical bytes that are signed."""
        return b"".join(
            [
                _header(Kind.VOTE),
                self.network,
                self.device,
                struct.pack(">Q", self.seq),
                self.block_id,
                self.witness,
            ]
        )

    def signed(self, key: SigningKey) -> Vote:
        """This vote signed by ``key``, with its bytes and id."""
        body = self.body()
        return parse_entry(body + key.sign(body).signature)  # type: ignore[return-value]


Entry = Block | Vote

VOTE_WITNESS_AT = len(_header(Kind.VOTE)) + 32 + 32 + 8 + 32
"""Where a vote's witness key starts in its bytes (after network, device, seq, block):
lets a store find one witness's votes without parsing every vote."""


def parse_entry(data: bytes, *, verify: bool = True) -> Entry:
    """Parse and (by default) signature-check one entry; refuse anything non-canonical.

    Checks what the entry alone decides: format, field limits, amount range, that seq 0
    is an ``open`` and only seq 0, that ``prev`` is zero exactly at seq 0, that a device
    does not pay itself, and the signature. Rules that need the rest of the set are the
    validator's.
    """
    entry = _parse_fast(data) if type(data) is bytes else None
    if entry is not None:
        if verify:
            problem = signature_problem(entry)
            if problem:
                raise EncodingError("entry", problem)
        return entry
    if len(data) > ENTRY_BYTES_MAX:
        raise EncodingError("entry", f"{len(data)} bytes, limit {ENTRY_BYTES_MAX}")
    if len(data) < 4 + SIG_BYTES:
        raise EncodingError("entry", "truncated: shorter than a header and a signature")
    body, sig = data[:-SIG_BYTES], data[-SIG_BYTES:]
    r = _Reader(body, "entry")
    kind = _read_header(r)
    network = r.take(32, "network")
    device = r.take(32, "device")
    seq = r.u64("seq")
    if kind == Kind.VOTE:
        block_id = r.take(32, "block id")
        witness = r.take(32, "witness")
        r.end()
        entry = Vote(network, device, seq, block_id, witness, sig, bytes(data), entry_hash(data))
    elif kind in BLOCK_KINDS:
        entry = _parse_block_fields(r, kind, network, device, seq, sig, bytes(data))
    else:
        raise EncodingError("entry", f"kind {kind.name.lower()} is not a ledger entry")
    if verify:
        problem = signature_problem(entry)
        if problem:
            raise EncodingError("entry", problem)
    return entry


OPEN_UNSIGNED = "open_unsigned"
"""The reason code of an ``open`` whose device signature does not verify."""


def open_payload(network: bytes, account: bytes, device: bytes, label: str) -> bytes:
    """What a device signs to join an account (kind ``PAIRING``): the same bytes in its
    pairing request and in its ``open``: network || account || device || var8(label)."""
    raw = label.encode("utf-8")
    return network + account + device + bytes((len(raw),)) + raw


def device_signature(device_key: SigningKey, network: bytes, account: bytes, label: str) -> bytes:
    """The device's signature an ``open`` carries: over ``open_payload``, kind ``PAIRING``."""
    payload = open_payload(network, account, bytes(device_key.verify_key), label)
    return sign_message(device_key, Kind.PAIRING, payload)


def signature_problem(entry: Entry) -> str | None:
    """Why an entry's signatures do not verify (rule 1), or None when they do.

    Every entry carries its signer's signature over its body; an ``open`` also carries
    the device's own (``open_unsigned`` when it fails).
    """
    if not verify_signed(entry.signer, entry.signature + entry.raw[:-SIG_BYTES]):
        return f"bad signature (not signed by {short(entry.signer)}…)"
    if isinstance(entry, Block) and entry.kind == Kind.OPEN:
        payload = open_payload(entry.network, entry.account, entry.device, entry.label)
        if not verify_message(entry.device, Kind.PAIRING, payload, entry.device_sig):
            return (f"{OPEN_UNSIGNED}: the open of device {short(entry.device)}… lacks the "
                    "device's own signature (a device joins only the account it asked to)")
    return None


_HEAD_THIS = MAGIC + bytes((VERSION,))
_KIND_OF = {int(k): k for k in Kind}
_U64 = struct.Struct(">Q").unpack_from
_U16 = struct.Struct(">H").unpack_from
_VOTE_BYTES = 4 + 4 * 32 + 8 + SIG_BYTES  # header, network, device, block id, witness, seq
_RECEIVE_BYTES = 4 + 4 * 32 + 8 + SIG_BYTES  # header, network, device, prev, claim, seq
_REVOKE_BYTES = _RECEIVE_BYTES + 32  # … account, sibling
_SEQ_LIMIT = 2**63
_OPEN, _SEND, _ISSUE, _RECEIVE, _REVOKE, _VOTE = (
    int(k) for k in (Kind.OPEN, Kind.SEND, Kind.ISSUE, Kind.RECEIVE, Kind.REVOKE, Kind.VOTE)
)


def _parse_fast(data: bytes) -> Entry | None:
    """``parse_entry`` without its signature check, for entries that are well formed.

    Returns None for anything out of the ordinary (anything the careful path below would
    refuse, or a shape this path does not cover), so that path decides and names the
    fault. It accepts nothing the careful path refuses and builds the same entry.
    Offsets: header 0:4, network 4:36, device 36:68, seq 68:76, then per kind.
    """
    n = len(data)
    if n < _VOTE_BYTES or n > ENTRY_BYTES_MAX or data[:3] != _HEAD_THIS:
        return None
    k = data[3]
    seq = _U64(data, 68)[0]
    if k == _VOTE:  # vote: block id 76:108, witness 108:140
        if n != _VOTE_BYTES:
            return None
        return Vote(data[4:36], data[36:68], seq, data[76:108], data[108:140], data[140:],
                    data, entry_hash(data))
    if seq >= _SEQ_LIMIT or (k == _OPEN) != (seq == 0):
        return None
    prev = data[76:108]
    if (prev == ZERO_ID) != (seq == 0):
        return None
    device = data[36:68]
    if k == _RECEIVE:  # receive: claim 108:140
        if n != _RECEIVE_BYTES:
            return None
        return Block(Kind.RECEIVE, data[4:36], device, seq, prev, b"", "", b"", b"", 0, b"",
                     b"", data[108:140], b"", data[140:], data, entry_hash(data))
    if k in (_SEND, _ISSUE):  # to account 108:140, to device 140:172, amount 172:180, …
        if n < 183 + SIG_BYTES:
            return None
        to_device = data[140:172]
        amount = _U64(data, 172)[0]
        rlen = data[180]
        m = 181 + rlen
        if rlen > REQUEST_ID_BYTES_MAX or to_device == device or not 0 < amount <= AMOUNT_MAX:
            return None
        mlen = _U16(data, m)[0]
        if mlen > MEMO_BYTES_MAX or n != m + 2 + mlen + SIG_BYTES:
            return None
        return Block(_KIND_OF[k], data[4:36], device, seq, prev, b"", "", data[108:140],
                     to_device, amount, data[181:m], data[m + 2 : n - SIG_BYTES], b"", b"",
                     data[n - SIG_BYTES :], data, entry_hash(data))
    if k == _OPEN:  # open: account 108:140, label length 140, label, device signature
        llen = data[140]
        m = 141 + llen
        if llen > LABEL_BYTES_MAX or n != m + 2 * SIG_BYTES:
            return None
        try:
            label = data[141:m].decode("utf-8")
        except UnicodeDecodeError:
            return None
        return Block(Kind.OPEN, data[4:36], device, seq, prev, data[108:140], label, b"", b"",
                     0, b"", b"", b"", data[m : m + SIG_BYTES], data[n - SIG_BYTES :], data,
                     entry_hash(data))
    if k == _REVOKE:  # revoke: account 108:140, sibling 140:172
        if n != _REVOKE_BYTES or data[140:172] == device:
            return None
        account = data[108:140]
        return Block(Kind.REVOKE, data[4:36], device, seq, prev, account, "", account,
                     data[140:172], 0, b"", b"", b"", b"", data[172:], data, entry_hash(data))
    return None


def _parse_block_fields(
    r: _Reader, kind: Kind, network: bytes, device: bytes, seq: int, sig: bytes, data: bytes
) -> Block:
    prev = r.take(32, "prev")
    if seq >= 2**63:
        raise EncodingError("entry", f"seq {seq} out of range")
    if (seq == 0) != (kind == Kind.OPEN):
        raise EncodingError("entry", "seq 0 must be an open, and an open must be at seq 0")
    if (prev == ZERO_ID) != (seq == 0):
        raise EncodingError("entry", "prev must be zero exactly at seq 0")
    f: dict = {}
    if kind == Kind.OPEN:
        f["account"] = r.take(32, "account")
        f["label"] = r.text("label", LABEL_BYTES_MAX)
        f["device_sig"] = r.take(SIG_BYTES, "device signature")
    elif kind in PAYMENT_KINDS:
        f["to_account"] = r.take(32, "to account")
        f["to_device"] = r.take(32, "to device")
        f["amount"] = r.u64("amount")
        f["request_id"] = r.var8("request id", REQUEST_ID_BYTES_MAX)
        f["memo"] = r.var16("memo", MEMO_BYTES_MAX)
        if not 0 < f["amount"] <= AMOUNT_MAX:
            raise EncodingError("entry", f"amount {f['amount']} outside 1..2^63-1")
        if f["to_device"] == device:
            raise EncodingError("entry", "a device cannot pay itself")
    elif kind == Kind.RECEIVE:
        f["claim"] = r.take(32, "claim")
    elif kind == Kind.REVOKE:
        f["account"] = r.take(32, "account")
        f["to_device"] = r.take(32, "sibling device")
        f["to_account"] = f["account"]
        if f["to_device"] == device:
            raise EncodingError("entry", "a revoke must name a sibling, not the revoked device")
    r.end()
    return Block(
        kind, network, device, seq, prev, signature=sig, raw=data, id=entry_hash(data), **f
    )


@dataclass(frozen=True, slots=True)
class Policy:
    """The offline floor limits of DESIGN §5, in minor units; settle period in seconds."""

    floor_payment: int
    floor_account: int
    floor_till: int
    settle_period_s: int


@dataclass(frozen=True, slots=True)
class Genesis:
    """The signed record that names a network; its id is the hash of its signed bytes."""

    name: str
    currency: str
    decimals: int
    issuer: bytes
    witnesses: tuple[bytes, ...]
    quorum: int
    policy: Policy
    signature: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def network_id(self) -> bytes:
        """The network's id: BLAKE2b-256 of the signed genesis."""
        return entry_hash(self.raw)

    def body(self) -> bytes:
        """The canonical bytes the issuer signs."""
        name = self.name.encode()
        cur = self.currency.encode()
        p = self.policy
        return b"".join(
            [
                _header(Kind.GENESIS),
                bytes((len(name),)),
                name,
                bytes((len(cur),)),
                cur,
                bytes((self.decimals,)),
                self.issuer,
                bytes((len(self.witnesses),)),
                *self.witnesses,
                bytes((self.quorum,)),
                struct.pack(
                    ">QQQQ", p.floor_payment, p.floor_account, p.floor_till, p.settle_period_s
                ),
            ]
        )

    def signed(self, key: SigningKey) -> Genesis:
        """This genesis signed by the issuer key; checked like a parsed one."""
        body = self.body()
        return parse_genesis(body + key.sign(body).signature)


def parse_genesis(data: bytes) -> Genesis:
    """Parse and verify a genesis record; refuse one that breaks the quorum rule."""
    if len(data) > 4096 or len(data) < 4 + SIG_BYTES:
        raise EncodingError("genesis", f"{len(data)} bytes is not a genesis record")
    body, sig = data[:-SIG_BYTES], data[-SIG_BYTES:]
    r = _Reader(body, "genesis")
    if _read_header(r) != Kind.GENESIS:
        raise EncodingError("genesis", "not a genesis record")
    name = r.text("name", NAME_BYTES_MAX)
    currency = r.text("currency", 8)
    decimals = r.u8("decimals")
    issuer = r.take(32, "issuer")
    n = r.u8("witness count")
    if n > WITNESSES_MAX:
        raise EncodingError("genesis", f"{n} witnesses, limit {WITNESSES_MAX}")
    witnesses = tuple(r.take(32, "witness") for _ in range(n))
    quorum = r.u8("quorum")
    policy = Policy(*struct.unpack(">QQQQ", r.take(32, "policy")))
    r.end()
    if not (currency.isascii() and currency.isalpha() and currency.isupper() and currency):
        raise EncodingError("genesis", f"currency {currency!r} is not an upper-case code")
    if decimals > 18:
        raise EncodingError("genesis", f"{decimals} decimals, limit 18")
    if len(set(witnesses)) != n:
        raise EncodingError("genesis", "a witness key is listed twice")
    check_quorum(n, quorum, "genesis")
    if not _verify(issuer, body, sig):
        raise EncodingError("genesis", "bad signature (not signed by its issuer)")
    return Genesis(name, currency, decimals, issuer, witnesses, quorum, policy, sig, bytes(data))


def check_quorum(witnesses: int, quorum: int, what: str = "network") -> None:
    """Refuse a quorum under which two quorums might share no witness (2q > N)."""
    if witnesses == 0 and quorum != 0:
        raise EncodingError(what, f"quorum {quorum} with no witnesses; use quorum 0")
    if witnesses and not (2 * quorum > witnesses and quorum <= witnesses):
        raise EncodingError(
            what,
            f"quorum {quorum} of {witnesses} witnesses breaks 2q > N (try {witnesses // 2 + 1})",
        )


def sign_message(key: SigningKey, kind: Kind, payload: bytes) -> bytes:
    """Sign a non-ledger message (pairing request, hello proof) under its own kind."""
    return key.sign(_header(kind) + payload).signature


def verify_message(key: bytes, kind: Kind, payload: bytes, sig: bytes) -> bool:
    """Check a signature made by ``sign_message``."""
    return _verify(key, _header(kind) + payload, sig)
