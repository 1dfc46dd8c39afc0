"""Payment bundles: entries carried as a file when no network exists at all.

Layout (all integers big-endian), version 2::

    magic     6 bytes  b"TSBNDL"
    version   u8       2
    network   32 bytes the network id
    sections  u32      number of sections
    checksum  32 bytes BLAKE2b-256 of the 43 bytes before it
    section × sections:
        count     u32      number of entries
        entries   count × (u16 length, entry bytes)
        checksum  32 bytes BLAKE2b-256 of the section's count and entries

Each section checks itself, so a wallet keeps the sections it exported before
(``wallet.export_cache``) and writes a new bundle by copying them and adding one, without
reading or hashing them again. Within a section entries are ordered dependencies first
(``dependency_order``); a reader's statuses never depend on the order (validity is a
function of the set), the order only lets it merge the file in one pass.

Version 1 (one list of entries, ``count`` then the entries, a checksum of everything
before it) is still read.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import heapq
import operator
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from wallet.encoding import (
    ENTRY_BYTES_MAX,
    ZERO_ID,
    Block,
    Entry,
    Kind,
    Vote,
    entry_hash,
    id_text,
    parse_entry,
    short,
)
from wallet.errors import BundleError

MAGIC = b"TSBNDL"
VERSION = 2
VERSIONS_READ = (1, 2)
BUNDLE_BYTES_MAX = 256 << 20
SUM_BYTES = 32
"""A BLAKE2b-256 checksum."""
HEAD_BYTES = len(MAGIC) + 1 + 32 + 4 + SUM_BYTES
"""A version-2 header: magic, version, network, section count, checksum."""
SECTION_OVERHEAD = 4 + SUM_BYTES
"""A section's bytes beside its entries: the count and the checksum."""
_V1_HEAD = len(MAGIC) + 1 + 32 + 4
_COPY_CHUNK = 8 << 20


def checksum(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE2b-256: a bundle's checksums."""
    return hashlib.blake2b(data, digest_size=SUM_BYTES).digest()


def encode_section(bodies: list[bytes]) -> bytes:
    """One self-checking section carrying these entries."""
    parts = [struct.pack(">I", len(bodies))]
    for b in bodies:
        parts += [struct.pack(">H", len(b)), b]
    data = b"".join(parts)
    return data + checksum(data)


def encode_head(network: bytes, sections: int) -> bytes:
    """A version-2 bundle's header, for a bundle of ``sections`` sections."""
    data = MAGIC + bytes((VERSION,)) + network + struct.pack(">I", sections)
    return data + checksum(data)


def encode_bundle(network: bytes, bodies: list[bytes]) -> bytes:
    """The bytes of a bundle carrying these entries (one section)."""
    return encode_head(network, 1) + encode_section(bodies)


@dataclass(frozen=True, slots=True)
class SectionsFile:
    """Sections already encoded, in a file: the first ``size`` bytes of ``path`` hold
    ``sections`` sections carrying ``entries`` entries (``wallet.export_cache``)."""

    path: Path
    size: int
    sections: int
    entries: int


def write_bundle(path: Path, network: bytes, bodies: list[bytes],
                 prefix: SectionsFile | None = None) -> int:
    """Write a bundle file atomically: the sections of ``prefix`` (copied as they are,
    by the kernel) and then one more carrying ``bodies`` (none when it is empty and a
    prefix is given). Return its size in bytes.

    It is renamed into place whole, so no reader sees half of it, but not fsynced: a
    bundle is a copy of what the wallet holds, not a record of its own, and its header
    and sections carry checksums, so one torn by a crash before the system wrote it out
    is refused on import with what is wrong, and made again by exporting again. (The
    fsync was more than half of a 200 MB export's time; removable media are flushed
    when they are unmounted.)"""
    tail = encode_section(bodies) if bodies or prefix is None else b""
    n = (prefix.sections if prefix else 0) + (1 if tail else 0)
    size = HEAD_BYTES + (prefix.size if prefix else 0) + len(tail)
    if size > BUNDLE_BYTES_MAX:
        raise BundleError(f"bundle would be {size} bytes, over the {BUNDLE_BYTES_MAX} limit")
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            f.write(encode_head(network, n))
            if prefix is not None:
                f.flush()
                copy_span(prefix, f.fileno())
            f.write(tail)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise BundleError(f"cannot write bundle {path}: {exc.strerror}") from exc
    return size


def join_sections(parts: list[bytes]) -> bytes:
    """Encoded sections, in order, as one section carrying all their entries (each
    part's checksum is dropped, not checked: they come from our own file)."""
    count = sum(struct.unpack(">I", p[:4])[0] for p in parts)
    data = struct.pack(">I", count) + b"".join(p[4:-SUM_BYTES] for p in parts)
    return data + checksum(data)


def copy_span(prefix: SectionsFile, out: int) -> None:
    """The first ``prefix.size`` bytes of its file, appended to the file ``out``."""
    with open(prefix.path, "rb") as src:
        left = prefix.size
        while left:
            try:
                n = os.copy_file_range(src.fileno(), out, min(left, _COPY_CHUNK))
            except (AttributeError, OSError):  # no copy_file_range here: copy by hand
                n = os.write(out, src.read(min(left, _COPY_CHUNK)))
            if n <= 0:
                raise OSError(0, f"{prefix.path} is shorter than its {prefix.size} bytes")
            left -= n


def decode_sections(data: bytes | memoryview, count: int, where: str = "") -> \
        tuple[list[bytes], int]:
    """``count`` sections from the start of ``data``: their entries and the bytes they
    took. A BundleError says which section and entry is wrong."""
    out: list[bytes] = []
    pos = 0
    for s in range(count):
        at = f"section {s + 1} of {count}{where}"
        if pos + 4 > len(data):
            raise BundleError(f"truncated or corrupt bundle: {at} is missing")
        start = pos
        (n_entries,) = struct.unpack(">I", data[pos : pos + 4])
        pos += 4
        for i in range(n_entries):
            if pos + 2 > len(data):
                raise BundleError(f"truncated or corrupt bundle: entry #{i} of {n_entries} "
                                  f"in {at} is missing")
            (n,) = struct.unpack(">H", data[pos : pos + 2])
            if n > ENTRY_BYTES_MAX:
                raise _entry_fault(f"entry #{i} of {n_entries} in {at} is {n} "
                                   f"bytes, over the {ENTRY_BYTES_MAX}-byte limit of an entry")
            if pos + 2 + n > len(data):
                raise BundleError(f"truncated or corrupt bundle: entry #{i} of {n_entries} "
                                  f"in {at} is cut short")
            out.append(bytes(data[pos + 2 : pos + 2 + n]))
            pos += 2 + n
        if pos + SUM_BYTES > len(data):
            raise BundleError(f"truncated or corrupt bundle: the checksum of {at} is cut short")
        if checksum(data[start:pos]) != data[pos : pos + SUM_BYTES]:
            raise BundleError(f"corrupt bundle: checksum of {at} failed (the file was "
                              "damaged or altered)")
        pos += SUM_BYTES
    return out, pos


def _entry_fault(what: str) -> BundleError:
    """An entry length over the limit: a writer never makes one, so the file was
    damaged or made by hand (the section's end, hence its checksum, is unknown)."""
    return BundleError(f"malformed or corrupt bundle: {what}")


def decode_bundle(data: bytes, network: bytes) -> list[bytes]:
    """The entries of a bundle for this network; a BundleError says what is wrong."""
    if len(data) > BUNDLE_BYTES_MAX:
        raise BundleError(f"oversized bundle: {len(data)} bytes, limit {BUNDLE_BYTES_MAX}")
    if not data:
        raise BundleError("not a Tallystick bundle: the file is empty")
    if not data.startswith(MAGIC[: min(len(data), len(MAGIC))]):
        raise BundleError("not a Tallystick bundle (bad magic)")
    if len(data) <= len(MAGIC):
        raise BundleError(f"truncated bundle: {len(data)} bytes is shorter than its header")
    version = data[len(MAGIC)]
    if version not in VERSIONS_READ:
        raise BundleError(f"bundle format version {version} is not supported "
                          f"(this tally reads {' and '.join(map(str, VERSIONS_READ))})")
    if version == 1:
        return _decode_v1(data, network)
    if len(data) < HEAD_BYTES:
        raise BundleError(f"truncated bundle: {len(data)} bytes is shorter than its header")
    head = data[: HEAD_BYTES - SUM_BYTES]
    if checksum(head) != data[HEAD_BYTES - SUM_BYTES : HEAD_BYTES]:
        raise BundleError("corrupt bundle: checksum of the header failed (the file was "
                          "damaged or altered)")
    bundle_net = data[len(MAGIC) + 1 : len(MAGIC) + 33]
    if bundle_net != network:
        raise BundleError(
            f"bundle is for network {id_text(bundle_net)}, this wallet is on {id_text(network)}"
        )
    (count,) = struct.unpack(">I", data[len(MAGIC) + 33 : HEAD_BYTES - SUM_BYTES])
    body = memoryview(data)[HEAD_BYTES:]
    out, used = decode_sections(body, count)
    if used != len(body):
        raise BundleError(f"malformed bundle: {len(body) - used} bytes after the entries")
    return out


def _decode_v1(data: bytes, network: bytes) -> list[bytes]:
    if len(data) < _V1_HEAD + SUM_BYTES:
        raise BundleError(f"truncated bundle: {len(data)} bytes is shorter than its header")
    body, given = data[:-SUM_BYTES], data[-SUM_BYTES:]
    bundle_net = data[len(MAGIC) + 1 : len(MAGIC) + 33]
    (count,) = struct.unpack(">I", data[len(MAGIC) + 33 : _V1_HEAD])
    pos, out = _V1_HEAD, []
    for i in range(count):
        if pos + 2 > len(body):
            raise _truncated_or_corrupt(body, given, f"entry #{i} of {count} is missing")
        (n,) = struct.unpack(">H", body[pos : pos + 2])
        if n > ENTRY_BYTES_MAX:
            raise _truncated_or_corrupt(
                body, given, f"entry #{i} of {count} is {n} bytes, over the "
                f"{ENTRY_BYTES_MAX}-byte limit of an entry")
        if pos + 2 + n > len(body):
            raise _truncated_or_corrupt(body, given, f"entry #{i} of {count} is cut short")
        out.append(body[pos + 2 : pos + 2 + n])
        pos += 2 + n
    if pos != len(body):
        raise _truncated_or_corrupt(body, given, f"{len(body) - pos} bytes after the entries")
    if checksum(body) != given:
        raise BundleError("corrupt bundle: checksum failed (the file was damaged or altered)")
    if bundle_net != network:
        raise BundleError(
            f"bundle is for network {id_text(bundle_net)}, this wallet is on {id_text(network)}"
        )
    return out


def _truncated_or_corrupt(body: bytes, given: bytes, what: str) -> BundleError:
    if checksum(body) == given:
        return BundleError(f"malformed bundle: {what}")
    return BundleError(f"truncated or corrupt bundle: {what}")


def read_bundle(path: Path, network: bytes) -> list[bytes]:
    """Read and check a bundle file without reading more than the size limit."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc.strerror}") from exc
    if size > BUNDLE_BYTES_MAX:
        raise BundleError(f"oversized bundle: {size} bytes, limit {BUNDLE_BYTES_MAX}")
    try:
        with open(path, "rb") as f:  # never more than the limit, whatever stat said
            data = f.read(BUNDLE_BYTES_MAX + 1)
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc.strerror}") from exc
    if len(data) > BUNDLE_BYTES_MAX:
        raise BundleError(f"oversized bundle: more than the {BUNDLE_BYTES_MAX}-byte limit")
    return decode_bundle(data, network)


# ------------------------------------------------------------ dependency order
# What an entry depends on, among the entries at hand (DESIGN §2, §3):
#   - a block at seq > 0: its ``prev``, and its device's ``open`` (every seq-0 block of
#     that device: a forked open is a dependency too);
#   - a ``receive``: the entry it claims, and — when that claim is a payment (or revoke)
#     addressed to another device e — the ``revoke`` of e that names the receiving
#     device, which routes the claim to it (every such revoke held);
#   - a vote: the block it names.
# Dependencies on entries not at hand are ignored. The ones named by id (prev, claim, a
# vote's block) cannot form a cycle (an id is a hash of bytes that name the other id);
# neither can the opens (an open depends on nothing). The routing revokes can, in a
# hostile set (a revoke whose own chain claims a send the receive's device made later):
# such an edge is given up only when nothing else can go next, and the smallest
# entry that waits on routing alone goes first.


def _entry_id(e: Entry) -> bytes:
    if e.id:
        return e.id
    return entry_hash(e.raw or e.body() + e.signature)


_RECEIVE = Kind.RECEIVE
_REVOKE = Kind.REVOKE
_ID = operator.attrgetter("id")
_SEQ = operator.attrgetter("seq")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic collections while the order's objects pile up (none of them form a
    cycle, and each collection would walk every entry the process holds)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def dependency_order(entries: Iterable[Entry]) -> list[Entry]:
    """The entries in an order that lists each one after everything it depends on that
    is among them: a deterministic topological order (the same list whatever order they
    come in), ties broken by (seq, id).

    Kahn's algorithm over integer nodes, without recursion, in O(n log n): a device's
    opens and the revokes that route a claim are one shared node each, so no entry has
    more than four edges in, whatever the set holds. An entry given twice (the same id)
    is listed twice, side by side. Raises RuntimeError if the result were not a
    permutation of the input.
    """
    items = list(entries)
    with _gc_paused():
        out = _dependency_order(items)
    if len(out) != len(items):
        raise RuntimeError(f"dependency_order gave {len(out)} entries for {len(items)}")
    given = set(map(id, items))
    if len(given) == len(items):
        same = set(map(id, out)) == given
    else:  # the same object more than once: count them
        same = sorted(map(id, out)) == sorted(map(id, items))
    if not same:
        raise RuntimeError("dependency_order lost some entries and repeated others")
    return out


def _dependency_order(items: list[Entry]) -> list[Entry]:
    id_of = _ID if all(map(_ID, items)) else _entry_id  # hand-made entries lack ids
    by_id: dict[bytes, Entry] = {}
    extra: dict[bytes, list[Entry]] = {}
    for e in items:
        eid = id_of(e)
        if eid in by_id:
            extra.setdefault(eid, []).append(e)
        else:
            by_id[eid] = e
    # Nodes are numbered in tie-break order, (seq, id), so the heaps hold plain ints.
    nodes = list(by_id.values())
    nodes.sort(key=id_of)
    nodes.sort(key=_SEQ)  # stable: by id within a seq
    ids = list(map(id_of, nodes))
    node_of = {eid: i for i, eid in enumerate(ids)}
    n = len(nodes)
    opens_of: dict[bytes, list[int]] = {}
    routes_of: dict[tuple[bytes, bytes], list[int]] = {}
    for i, e in enumerate(nodes):
        if type(e) is Block:
            if e.seq == 0:
                opens_of.setdefault(e.device, []).append(i)
            elif e.kind == _REVOKE:
                routes_of.setdefault((e.device, e.to_device), []).append(i)

    # Successors of node i, and how many of its dependencies are not listed yet: hard
    # ones (named by id, and the device's opens) and soft ones (the routing revokes).
    # Numbers from n on are shared nodes: the opens of one device, or the revokes of one
    # device naming one sibling; each stands for all of them in the count of its
    # successors (``shared_in``: how many of its members are not listed yet).
    succ: list[list[int]] = [[] for _ in range(n)]
    hard_in = [0] * n
    soft_in = [0] * n
    shared_succ: list[list[int]] = []
    shared_in: list[int] = []
    shared_soft: list[bool] = []
    shared_of: dict[object, int] = {}
    get = node_of.get
    for i, e in enumerate(nodes):
        if type(e) is Vote:
            j = get(e.block_id)
            if j is not None:
                succ[j].append(i)
                hard_in[i] = 1
            continue
        hard = 0
        tags: list[tuple[object, list[int], bool]] = []
        if e.seq:
            j = get(e.prev)
            if j is not None:
                succ[j].append(i)
                hard = 1
            opens = opens_of.get(e.device)
            if opens:
                tags.append((e.device, opens, False))
                hard += 1
        if e.kind == _RECEIVE:
            j = get(e.claim)
            if j is not None:
                succ[j].append(i)
                hard += 1
                c = nodes[j]
                if type(c) is Block and c.to_device and c.to_device != e.device:
                    route = (c.to_device, e.device)
                    revokes = routes_of.get(route)
                    if revokes:
                        tags.append((route, revokes, True))
                        soft_in[i] = 1
        hard_in[i] = hard
        for tag, members, soft in tags:
            k = shared_of.get(tag)
            if k is None:
                k = shared_of[tag] = len(shared_succ)
                shared_succ.append([])
                shared_in.append(len(members))
                shared_soft.append(soft)
                for m in members:
                    succ[m].append(n + k)
            shared_succ[k].append(i)

    ready = [i for i in range(n) if not hard_in[i] and not soft_in[i]]  # sorted: a heap
    waits_on_routes = [i for i in range(n) if not hard_in[i] and soft_in[i]]
    last_resort = 0  # for a hand-made set whose ids form a cycle: the smallest not done
    done = bytearray(n)
    out: list[Entry] = []
    push, pop = heapq.heappush, heapq.heappop
    for _ in range(n):
        if ready:
            i = pop(ready)
        else:  # a cycle through a routing revoke: the first entry waiting on one alone
            i = -1
            while waits_on_routes:
                j = pop(waits_on_routes)
                if not done[j]:
                    i = j
                    break
            if i < 0:
                while done[last_resort]:
                    last_resort += 1
                i = last_resort
        done[i] = 1
        out.append(nodes[i])
        if extra and ids[i] in extra:
            out.extend(extra[ids[i]])
        for s in succ[i]:
            if s < n:
                if not done[s]:
                    hard_in[s] -= 1
                    if not hard_in[s]:
                        push(waits_on_routes if soft_in[s] else ready, s)
                continue
            k = s - n
            shared_in[k] -= 1
            if shared_in[k]:
                continue
            if shared_soft[k]:
                for t in shared_succ[k]:
                    if not done[t]:
                        soft_in[t] -= 1
                        if not soft_in[t] and not hard_in[t]:
                            push(ready, t)
            else:
                for t in shared_succ[k]:
                    if not done[t]:
                        hard_in[t] -= 1
                        if not hard_in[t]:
                            push(waits_on_routes if soft_in[t] else ready, t)
    return out


def dependency_faults(entries: Iterable[Entry | bytes]) -> list[tuple[int, int, str]]:
    """Where a list breaks dependency order: (position, position of a dependency listed
    after it, which dependency). Bytes are parsed (signatures unchecked). A dependency
    listed more than once counts where it is first listed (a receiver has it from then
    on). Written apart from ``dependency_order``, by positions, so that tests can check
    one with the other.
    """
    seq: list[Entry] = [
        parse_entry(e, verify=False) if isinstance(e, bytes | bytearray) else e
        for e in entries
    ]
    # An entry listed more than once is at hand from its first copy on: every kind of
    # dependency is placed where it is first listed. For the opens of a device and the
    # revokes of a route (all of them needed) that is the latest of their first copies.
    first: dict[bytes, int] = {}
    last_open: dict[bytes, int] = {}
    last_route: dict[tuple[bytes, bytes], int] = {}
    for p, e in enumerate(seq):
        eid = _entry_id(e)
        if eid in first:  # a later copy: already at hand
            continue
        first[eid] = p
        if type(e) is Block and e.seq == 0:
            last_open[e.device] = p
        elif type(e) is Block and e.kind == Kind.REVOKE:
            last_route[(e.device, e.to_device)] = p
    faults: list[tuple[int, int, str]] = []

    def after(p: int, q: int | None, what: str) -> None:
        if q is not None and q > p:
            faults.append((p, q, what))

    for p, e in enumerate(seq):
        if type(e) is Vote:
            after(p, first.get(e.block_id), "the block it votes for")
            continue
        if e.seq:
            if e.prev != ZERO_ID:
                after(p, first.get(e.prev), "its prev")
            after(p, last_open.get(e.device), "its device's open")
        if e.kind == Kind.RECEIVE:
            q = first.get(e.claim)
            after(p, q, "the entry it claims")
            c = seq[q] if q is not None else None
            if type(c) is Block and c.to_device and c.to_device != e.device:
                after(p, last_route.get((c.to_device, e.device)), "the revoke that routes it")
    return faults


def check_dependency_order(entries: Iterable[Entry | bytes]) -> None:
    """Raise BundleError naming the first entries listed before a dependency of theirs."""
    seq = [parse_entry(e, verify=False) if isinstance(e, bytes | bytearray) else e
           for e in entries]
    faults = dependency_faults(seq)
    if not faults:
        return

    def name(p: int) -> str:
        e = seq[p]
        return f"#{p} {e.kind.name.lower()} {short(e.device)}…/{e.seq}"

    shown = "; ".join(f"{name(p)} before {what} {name(q)}" for p, q, what in faults[:5])
    more = f" (and {len(faults) - 5} more)" if len(faults) > 5 else ""
    raise BundleError(f"entries out of dependency order: {shown}{more}")
