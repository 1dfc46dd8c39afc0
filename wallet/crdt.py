"""The ledger Doc: content-addressed Yjs items, and the gate every outside update passes.

DESIGN §6. Each network's ledger is one pycrdt ``Doc`` holding one root ``Map``
(``ROOT``) used as a grow-only set: key = ``id_text(entry.id)``, value = the entry's
signed bytes. Every entry is inserted as a Yjs item whose id is derived from its
content -- client id = the top ``ITEM_ID_BITS`` bits of its hash, clock 0, no origin --
so the same entry inserted anywhere is the same item with the same bytes.

pycrdt cannot refuse or roll back an update once applied, so nothing from outside is
applied raw. ``decode_update`` reads a Yjs v1 update and accepts only the one shape such
a ledger produces::

    update     = varuint(n_clients) client{n_clients} delete_set
    client     = varuint(1) varuint(client_id) varuint(0)          1 struct at clock 0
                 0x28                                              ContentAny | parentSub
                 varuint(1) string("entries")                      parent: root type
                 string(key)                                       parentSub: the map key
                 varuint(1) 0x74 varuint(len) bytes                one Any: a Uint8Array
    delete_set = varuint(0)                                        empty
    string     = varuint(len) utf-8

(varuints are minimal LEB128). ``Gate.check`` then verifies every value as an entry and
re-encodes what may be applied with ``encode_items``, which writes exactly the bytes yrs
writes (clients in descending order, as yrs's ``encode_diff`` sorts them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from wallet.encoding import (
    ID_BYTES,
    Entry,
    Vote,
    entry_hash,
    id_text,
    parse_entry,
)
from wallet.errors import EncodingError, GateRefused, TallyError

if TYPE_CHECKING:
    from pycrdt import Doc, Map

ROOT = "entries"
ITEM_ID_BITS = 53

CLIENT_ID_LIMIT = 1 << 53
"""Yjs/yrs client ids are below 2^53 (pycrdt refuses larger ones)."""

_INFO_MAP_ANY = 0x28  # content ref 8 (ContentAny) | 0x20 parentSub; no origin bits
_HAS_ORIGIN = 0x80
_HAS_RIGHT_ORIGIN = 0x40
_HAS_PARENT_SUB = 0x20
_CONTENT_ANY = 8
_ANY_BUFFER = 116  # lib0 Any tag for a Uint8Array
_ROOT_BYTES = ROOT.encode()
# info byte, parent info 1 (a root type named by a string), the root's name
_ITEM_HEAD = bytes((_INFO_MAP_ANY, 1, len(_ROOT_BYTES))) + _ROOT_BYTES
_ONE_BUFFER = bytes((1, _ANY_BUFFER))  # ContentAny with 1 value, of type Uint8Array
_CONTENT_REFS = {
    1: "ContentDeleted",
    2: "ContentJSON",
    3: "ContentBinary",
    4: "ContentString",
    5: "ContentEmbed",
    6: "ContentFormat",
    7: "ContentType",
    9: "ContentDoc",
    11: "ContentMove",
}


def item_client_id(entry_id: bytes, bits: int = ITEM_ID_BITS) -> int:
    """The Yjs client id of an entry's item: the top ``bits`` bits of its id."""
    return int.from_bytes(entry_id[:8], "big") >> (64 - bits)


def _varuint(n: int) -> bytes:
    """``n`` as minimal unsigned LEB128 (lib0 ``writeVarUint``)."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = []
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_AFTER_CLIENT = b"\x00" + _ITEM_HEAD  # clock 0, then the item head


def item_section(client: int, key: str, value: bytes) -> bytes:
    """One client's section of a canonical update: the item ``(client, key, value)``.

    ``join_sections`` makes an update of sections; encoding an entry's section once
    lets a relay build each subscriber's update by joining bytes. Raises
    ``ValueError`` for a client id outside 0..2^53-1.
    """
    if not 0 <= client < CLIENT_ID_LIMIT:
        raise ValueError(f"client id {client} outside 0..2^53-1")
    k = key.encode()
    return b"".join((
        b"\x01",  # one struct for this client
        _varuint(client),
        _AFTER_CLIENT,  # clock 0, info 0x28, parent = root ROOT
        _varuint(len(k)),
        k,  # parentSub
        _ONE_BUFFER,  # ContentAny of one Uint8Array
        _varuint(len(value)),
        bytes(value),
    ))


def join_sections(sections: Iterable[tuple[int, bytes]]) -> bytes:
    """The canonical update of ``(client, item_section)`` pairs: clients in descending
    order, an empty delete set. Raises ``ValueError`` for a client given twice."""
    rows = sorted(sections, key=lambda row: row[0], reverse=True)
    for i in range(1, len(rows)):
        if rows[i][0] == rows[i - 1][0]:
            raise ValueError(f"client id {rows[i][0]} given twice")
    return b"".join((_varuint(len(rows)), *(row[1] for row in rows), b"\x00"))


def join_sorted_sections(sections: Iterable[tuple[int, bytes]]) -> bytes:
    """``join_sections`` for sections already in descending client order, each client
    once (as read from an index): no sort, one pass."""
    parts = [section for _, section in sections]
    return b"".join((_varuint(len(parts)), *parts, b"\x00"))


def encode_state_vector(clients: Iterable[int]) -> bytes:
    """The Yjs v1 state vector of a ledger Doc holding one item (clock 1) per client."""
    parts = [_varuint(c) + b"\x01" for c in clients]
    return b"".join((_varuint(len(parts)), *parts))


def encode_items(items: Iterable[tuple[int, str, bytes]]) -> bytes:
    """The canonical Yjs v1 update carrying one map item per ``(client_id, key, value)``.

    Each item sits at clock 0 with no origin, under the root map ``ROOT`` at ``key``,
    and holds ``value`` as one Uint8Array in a ContentAny: byte for byte what a fresh
    ``Doc(client_id=c)`` writes for ``doc.get(ROOT, type=Map)[key] = value``. Clients
    come in descending order and the delete set is empty, as in yrs's own updates.
    Raises ``ValueError`` for a client id outside 0..2^53-1 or given twice.
    """
    return join_sections((c, item_section(c, k, v)) for c, k, v in items)


@dataclass(frozen=True, slots=True)
class DecodedItem:
    """One map item read off an update by ``decode_update``."""

    client: int
    clock: int
    key: str
    value: bytes


def _read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a minimal LEB128 varuint below 2^64 at ``pos``; return (value, new pos)."""
    n = len(data)
    value = 0
    shift = 0
    while True:
        if pos >= n:
            raise GateRefused("truncated", f"update ends inside a varuint at byte {pos}")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and shift:
                raise GateRefused("garbage", f"non-minimal varuint ending at byte {pos - 1}")
            if value >= 1 << 64:
                raise GateRefused("garbage", f"varuint over 64 bits ending at byte {pos - 1}")
            return value, pos
        shift += 7
        if shift >= 70:
            raise GateRefused("garbage", f"varuint longer than 10 bytes at byte {pos}")


def _refuse_head(data: bytes, pos: int) -> NoReturn:
    """Say why the struct at ``pos`` is not a ``ROOT`` map item with ContentAny; raise."""
    if pos >= len(data):
        raise GateRefused("truncated", f"update ends before the struct at byte {pos}")
    info = data[pos]
    if info == 0:
        raise GateRefused("not_map_item", "a GC struct")
    if info == 10:
        raise GateRefused("not_map_item", "a Skip struct")
    if info & _HAS_ORIGIN:
        raise GateRefused("not_map_item", "an item with an origin")
    if info & _HAS_RIGHT_ORIGIN:
        raise GateRefused("not_map_item", "an item with a right origin")
    if not info & _HAS_PARENT_SUB:
        raise GateRefused("not_map_item", "an item without a map key (parentSub)")
    ref = info & 0x1F
    if ref != _CONTENT_ANY:
        name = _CONTENT_REFS.get(ref, f"content ref {ref}")
        raise GateRefused("not_map_item", f"an item holding {name}, not ContentAny")
    parent_info, pos = _read_varuint(data, pos + 1)
    if parent_info != 1:
        raise GateRefused("not_map_item", "an item whose parent is not a root type")
    length, pos = _read_varuint(data, pos)
    if pos + length > len(data):
        raise GateRefused("truncated", f"update ends inside the root name at byte {pos}")
    name = data[pos : pos + length]
    if name != _ROOT_BYTES:
        raise GateRefused("not_map_item", f"an item under root {name!r}, not {ROOT!r}")
    raise GateRefused("garbage", f"unreadable item head at byte {pos}")  # pragma: no cover


def _refuse_content(data: bytes, pos: int) -> NoReturn:
    """Say why the ContentAny at ``pos`` is not exactly one Uint8Array; raise."""
    count, pos = _read_varuint(data, pos)
    if count != 1:
        raise GateRefused("not_map_item", f"a ContentAny of {count} values, not 1")
    if pos >= len(data):
        raise GateRefused("truncated", f"update ends before an Any value at byte {pos}")
    raise GateRefused("not_map_item", f"an Any value of type {data[pos]}, not a Uint8Array")


def decode_update(update: bytes, *, max_bytes: int, max_items: int) -> list[DecodedItem]:
    """Read a Yjs v1 update that must consist only of canonical ledger map items.

    Accepts exactly the shape in the module docstring and returns its items in update
    order. Refuses everything else with ``GateRefused(reason, detail)``; this is the only
    exception it raises, whatever the input. Reasons: ``oversized`` (more than
    ``max_bytes`` bytes or ``max_items`` items), ``truncated``, ``trailing_bytes``,
    ``not_map_item`` (a GC or Skip struct, an origin or right origin, a parent other than
    the root ``ROOT``, no map key, content other than one Uint8Array in a ContentAny),
    ``clock`` (a clock other than 0, several structs for one client, or one client
    twice), ``delete`` (a non-empty delete set), ``garbage`` (non-minimal or over-long
    varuints, a client id of 2^53 or more, a key that is not UTF-8, a client section
    with no struct).
    """
    if not isinstance(update, bytes | bytearray | memoryview):
        raise GateRefused("garbage", f"an update is bytes, not {type(update).__name__}")
    data = bytes(update)
    n = len(data)
    if n > max_bytes:
        raise GateRefused("oversized", f"{n} bytes, limit {max_bytes}")
    count, pos = _read_varuint(data, 0)
    if count > max_items:
        raise GateRefused("oversized", f"{count} items, limit {max_items}")
    items: list[DecodedItem] = []
    clients: set[int] = set()
    read = _read_varuint
    head_len = len(_ITEM_HEAD)
    for _ in range(count):
        # struct count, client, clock
        if pos < n and data[pos] == 1:
            pos += 1
        else:
            structs, pos = read(data, pos)
            if structs == 0:
                raise GateRefused("garbage", "a client section with no struct")
            raise GateRefused("clock", f"{structs} structs for one client; an entry is one")
        client, pos = read(data, pos)
        if client >= CLIENT_ID_LIMIT:
            raise GateRefused("garbage", f"client id {client} is 2^53 or more")
        if client in clients:
            raise GateRefused("clock", f"client {client} appears twice")
        clients.add(client)
        if pos < n and data[pos] == 0:
            pos += 1
        else:
            clock, pos = read(data, pos)
            raise GateRefused("clock", f"item at clock {clock} of client {client}, not 0")
        # info byte, parent = root ROOT
        if data[pos : pos + head_len] == _ITEM_HEAD:
            pos += head_len
        else:
            _refuse_head(data, pos)
        # parentSub: the key
        if pos < n and data[pos] < 0x80:
            length = data[pos]
            pos += 1
        else:
            length, pos = read(data, pos)
        end = pos + length
        if end > n:
            raise GateRefused("truncated", f"update ends inside a key at byte {n}")
        try:
            key = data[pos:end].decode("utf-8")
        except UnicodeDecodeError:
            raise GateRefused("garbage", f"a key that is not UTF-8 at byte {pos}") from None
        pos = end
        # content: ContentAny with one Uint8Array
        if data[pos : pos + 2] == _ONE_BUFFER:
            pos += 2
        else:
            _refuse_content(data, pos)
        length, pos = read(data, pos)
        end = pos + length
        if end > n:
            raise GateRefused("truncated", f"update ends inside a value at byte {n}")
        items.append(DecodedItem(client, 0, key, data[pos:end]))
        pos = end
    deletes, pos = read(data, pos)
    if deletes:
        raise GateRefused("delete", f"a delete set naming {deletes} clients; the ledger only grows")
    if pos != n:
        raise GateRefused("trailing_bytes", f"{n - pos} bytes after the delete set")
    return items


def decode_state_vector(state_vector: bytes, *, max_clients: int = 1 << 24) -> dict[int, int]:
    """Read a Yjs v1 state vector strictly into ``{client: clock}``.

    Raises ``EncodingError`` for anything else (trailing bytes, a client twice, ...).
    Note that yrs writes a state vector's clients in hash-map order, so two Docs with
    the same content may give different ``get_state()`` bytes; compare decoded ones.
    """
    try:
        data = bytes(state_vector)
        count, pos = _read_varuint(data, 0)
        if count > max_clients:
            raise EncodingError("state vector", f"{count} clients, limit {max_clients}")
        out: dict[int, int] = {}
        for _ in range(count):
            client, pos = _read_varuint(data, pos)
            clock, pos = _read_varuint(data, pos)
            if client in out:
                raise EncodingError("state vector", f"client {client} appears twice")
            out[client] = clock
    except GateRefused as exc:
        raise EncodingError("state vector", exc.detail) from None
    except TypeError:
        raise EncodingError("state vector", "not bytes") from None
    if pos != len(data):
        raise EncodingError("state vector", f"{len(data) - pos} trailing bytes")
    return out


@dataclass(slots=True)
class GateResult:
    """What the gate let through from one update.

    ``update`` is the canonical re-encoding of the items to apply (``None`` if none);
    ``entries`` every new entry, applied or outside, in update order; ``outside`` those
    whose item id another entry holds (store them outside the Doc); ``dropped`` how many
    items carried entries already held (or repeated within the update); ``applied`` the
    entries ``update`` carries, in update order.
    """

    update: bytes | None
    entries: list[Entry]
    outside: list[Entry]
    dropped: int
    applied: list[Entry] = field(default_factory=list)


class Gate:
    """Checks an update from outside before anything of it is applied (DESIGN §6).

    ``network`` is the ledger's network id, ``witnesses`` the genesis witness keys;
    ``item_bits`` must match the ``LedgerDoc`` the result is applied to.
    """

    def __init__(
        self,
        network: bytes,
        witnesses: frozenset[bytes],
        *,
        item_bits: int = ITEM_ID_BITS,
        max_update_bytes: int = 4 << 20,
        max_entries: int = 20_000,
    ) -> None:
        if not 1 <= item_bits <= ITEM_ID_BITS:
            raise ValueError(f"item_bits {item_bits} outside 1..{ITEM_ID_BITS}")
        self.network = network
        self.witnesses = frozenset(witnesses)
        self.item_bits = item_bits
        self.max_update_bytes = max_update_bytes
        self.max_entries = max_entries

    def check(
        self,
        update: bytes,
        *,
        held: Callable[[bytes], bool],
        item_owner: Callable[[int], bytes | None],
    ) -> GateResult:
        """Decode and verify ``update``; return what to apply and what to store outside.

        ``held(entry_id)`` says whether the replica already has an entry (in the Doc or
        outside it); ``item_owner(client)`` which entry holds an item id in the Doc.
        Each item's key and client id must be the ones its value's hash gives
        (``key_mismatch``, ``item_id_mismatch``); items whose entry is held are dropped
        before anything else is checked about them (same bytes, already verified); the
        rest must parse and verify (``bad_entry``), be of this network
        (``wrong_network``) and, for votes, be signed by a genesis witness
        (``unknown_witness``). Any failure raises ``GateRefused`` for the whole update,
        naming the entry. Nothing is applied here.
        """
        items = decode_update(update, max_bytes=self.max_update_bytes, max_items=self.max_entries)
        bits = self.item_bits
        seen: set[bytes] = set()
        entries: list[Entry] = []
        outside: list[Entry] = []
        applied: list[Entry] = []
        rows: list[tuple[int, str, bytes]] = []
        dropped = 0
        for item in items:
            entry_id = entry_hash(item.value)
            text = id_text(entry_id)
            if item.key != text:
                raise GateRefused(
                    "key_mismatch", f"key {item.key[:64]!r} is not the id of its value", text
                )
            if item.client != item_client_id(entry_id, bits):
                raise GateRefused(
                    "item_id_mismatch",
                    f"item client {item.client}, its id gives {item_client_id(entry_id, bits)}",
                    text,
                )
            owner = item_owner(item.client)
            if entry_id in seen or owner == entry_id or held(entry_id):
                dropped += 1
                continue
            seen.add(entry_id)
            try:
                entry = parse_entry(item.value)
            except EncodingError as exc:
                raise GateRefused("bad_entry", str(exc), text) from None
            except Exception as exc:  # a peer's bytes must never crash the gate
                raise GateRefused("bad_entry", f"unparseable: {type(exc).__name__}", text) from None
            if entry.network != self.network:
                raise GateRefused("wrong_network", "an entry of another network", text)
            if isinstance(entry, Vote) and entry.witness not in self.witnesses:
                raise GateRefused(
                    "unknown_witness", "a vote by a key that is not a genesis witness", text
                )
            entries.append(entry)
            if owner is not None:
                outside.append(entry)
            else:
                applied.append(entry)
                rows.append((item.client, text, item.value))
        return GateResult(
            update=encode_items(rows) if rows else None,
            entries=entries,
            outside=outside,
            dropped=dropped,
            applied=applied,
        )


class DocCorrupted(TallyError):
    """A transaction on a ledger Doc did more than add content-addressed entries.

    Raised by the ``LedgerDoc`` backstop (its read-back and its ``audit``). The Doc
    cannot be rolled back: rebuild it from the store.
    """


class EntryDigest:
    """The sum of entry ids read as big-endian integers, mod 2^256 (DESIGN §6).

    Two replicas whose digests agree hold the same entry set (barring a constructed
    collision); add each entry exactly once, whether in the Doc or outside it.
    """

    __slots__ = ("_sum",)
    _MOD = 1 << 256

    def __init__(self, entry_ids: Iterable[bytes] = ()) -> None:
        self._sum = 0
        for entry_id in entry_ids:
            self.add(entry_id)

    def add(self, entry_id: bytes) -> None:
        """Count one more entry."""
        if len(entry_id) != ID_BYTES:
            raise ValueError(f"an entry id is {ID_BYTES} bytes, not {len(entry_id)}")
        self._sum = (self._sum + int.from_bytes(entry_id, "big")) % self._MOD

    @property
    def value(self) -> bytes:
        """The digest as 32 big-endian bytes."""
        return self._sum.to_bytes(32, "big")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EntryDigest):
            return self._sum == other._sum
        if isinstance(other, bytes | bytearray):
            return self.value == bytes(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"EntryDigest({self.value.hex()})"


class LedgerDoc:
    """One network's ledger Doc: the root ``Map`` of content-addressed entries.

    Never written locally: every change is an ``apply_update`` of canonical items
    (``insert`` for entries already verified, ``apply_checked`` for what a ``Gate``
    let through). It keeps ``{client_id: entry_id}`` for the items it holds.

    **Backstop.** After each update it applies, every item is read back: the key must
    hold the entry's bytes, so an item yrs silently skipped (its id already integrated)
    is caught at once, for O(k) work. ``audit`` checks the whole Doc, O(n): the map holds
    exactly the indexed entries and the state vector names exactly their items, each
    at clock 1 -- which catches a delete, an overwrite, a local write or an update
    applied around this class. A failed check is appended to ``violations``
    (``corrupted`` turns true) and raises ``DocCorrupted``; the Doc cannot be rolled
    back, so rebuild it from the store.

    Why not a ``Doc.observe`` callback (DESIGN §6): with one Yjs client per entry, any
    observer makes yrs compute the transaction's state vectors and update, O(n) per
    transaction (measured: 12 ms for a Map observer, 43 ms for a Doc observer, at
    100,000 entries, against 20 µs without one) -- the gate's cost times a thousand.
    """

    def __init__(self, item_bits: int = ITEM_ID_BITS) -> None:
        if not 1 <= item_bits <= ITEM_ID_BITS:
            raise ValueError(f"item_bits {item_bits} outside 1..{ITEM_ID_BITS}")
        self.item_bits = item_bits
        from pycrdt import Doc, Map  # imported here: ~90 ms that most commands never need

        self.doc: Doc = Doc()
        self.entries: Map = self.doc.get(ROOT, type=Map)
        self.violations: list[str] = []
        self._owner: dict[int, bytes] = {}
        self._client: dict[bytes, int] = {}

    @property
    def corrupted(self) -> bool:
        """True once the backstop has seen a transaction that was not a pure insert."""
        return bool(self.violations)

    def __len__(self) -> int:
        return len(self._client)

    def holds(self, entry_id: bytes) -> bool:
        """Whether the Doc holds this entry."""
        return entry_id in self._client

    def item_owner(self, client: int) -> bytes | None:
        """The id of the entry holding item id ``client`` in the Doc, if any."""
        return self._owner.get(client)

    def entry_ids(self) -> list[bytes]:
        """The ids of the entries the Doc holds."""
        return list(self._client)

    def insert(self, entries: Sequence[Entry]) -> list[Entry]:
        """Insert verified entries; return those that must live outside the Doc.

        Entries already held are skipped; one whose item id another entry holds (in the
        Doc or earlier in ``entries``) is returned instead of inserted. The rest go in
        one ``apply_update`` of ``encode_items``. Entries are trusted (parsed and
        verified by the caller); the backstop still checks they are content-addressed.
        """
        bits = self.item_bits
        rows: list[tuple[int, str, bytes]] = []
        taken: dict[int, Entry] = {}
        outside: list[Entry] = []
        for entry in entries:
            entry_id = entry.id
            if len(entry_id) != ID_BYTES or not entry.raw:
                raise ValueError("insert takes parsed entries (with their bytes and id)")
            if entry_id in self._client:
                continue
            client = item_client_id(entry_id, bits)
            owner = self._owner.get(client)
            if owner is None and client in taken:
                owner = taken[client].id
            if owner is None:
                taken[client] = entry
                rows.append((client, id_text(entry_id), entry.raw))
            elif owner != entry_id:
                outside.append(entry)
        if rows:
            self._apply(encode_items(rows), [(c, e.id, e.raw) for c, e in taken.items()])
        return outside

    def apply_checked(self, result: GateResult) -> list[Entry]:
        """Apply what ``Gate.check`` let through; return entries that must live outside.

        If the Doc changed since the check (another update took an item id or brought
        an entry), the entries are re-filtered through ``insert``; otherwise
        ``result.update`` is applied as is. The returned list holds entries that lost
        their item id in between (usually empty); ``result.outside`` still applies.
        """
        if result.update is None:
            return []
        bits = self.item_bits
        expect = [(item_client_id(e.id, bits), e.id, e.raw) for e in result.applied]
        fresh = all(i not in self._client and c not in self._owner for c, i, _ in expect)
        if fresh and len({c for c, _, _ in expect}) == len(expect):
            self._apply(result.update, expect)
            return []
        return self.insert(result.applied)

    def state_vector(self) -> bytes:
        """The Doc's state vector (Yjs v1)."""
        return self.doc.get_state()

    def update_since(self, state_vector: bytes) -> bytes:
        """The update (Yjs v1) a peer with ``state_vector`` lacks.

        The state vector is checked strictly first (``EncodingError`` if malformed).
        """
        decode_state_vector(state_vector)
        return self.doc.get_update(bytes(state_vector))

    def audit(self) -> None:
        """Check the whole Doc (O(n)); raise ``DocCorrupted`` if it is not a pure set of
        the indexed entries."""
        held = len(self.entries)
        if held != len(self._client):
            self._violation(f"the map holds {held} keys, the index {len(self._client)}")
        clocks = decode_state_vector(self.doc.get_state())
        for client, clock in clocks.items():
            if client not in self._owner:
                self._violation(f"item id {client} holds no indexed entry (a local write, "
                                "an overwrite or a delete)")
            if clock != 1:
                self._violation(f"item id {client} has {clock} structs; an entry has one")
        if len(clocks) != len(self._owner):
            self._violation(f"the state vector names {len(clocks)} items, the index "
                            f"{len(self._owner)}")

    def _violation(self, msg: str) -> NoReturn:
        self.violations.append(msg)
        raise DocCorrupted(msg)

    def _apply(self, update: bytes, expect: list[tuple[int, bytes, bytes]]) -> None:
        """Apply a canonical update of the items ``expect`` ((client, entry id, bytes)),
        then read every item back."""
        self.doc.apply_update(update)
        get = self.entries.get
        for client, entry_id, raw in expect:
            key = id_text(entry_id)
            if get(key) != raw:
                self._violation(f"item ({client}, 0) for key {key} was not integrated "
                                "(yrs skipped it or another item holds the key)")
            self._owner[client] = entry_id
            self._client[entry_id] = client
