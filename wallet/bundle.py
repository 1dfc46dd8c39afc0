"""Payment bundles: entries carried as a file when no network exists at all.

Layout (all integers big-endian)::

    magic     6 bytes  b"TSBNDL"
    version   u8       1
    network   32 bytes the network id
    count     u32      number of entries
    entries   count × (u16 length, entry bytes)
    checksum  32 bytes BLAKE2b-256 of everything before it

Entries are ordered dependencies first, so a receiver merges the file in one pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from pathlib import Path

from wallet.encoding import ENTRY_BYTES_MAX, id_text
from wallet.errors import BundleError

MAGIC = b"TSBNDL"
VERSION = 1
BUNDLE_BYTES_MAX = 256 << 20
_HEAD = len(MAGIC) + 1 + 32 + 4
_SUM = 32


def encode_bundle(network: bytes, bodies: list[bytes]) -> bytes:
    """The bytes of a bundle carrying these entries."""
    parts = [MAGIC, bytes((VERSION,)), network, struct.pack(">I", len(bodies))]
    for b in bodies:
        parts += [struct.pack(">H", len(b)), b]
    data = b"".join(parts)
    return data + hashlib.blake2b(data, digest_size=_SUM).digest()


def write_bundle(path: Path, network: bytes, bodies: list[bytes]) -> int:
    """Write a bundle file atomically; return its size in bytes."""
    data = encode_bundle(network, bodies)
    if len(data) > BUNDLE_BYTES_MAX:
        raise BundleError(f"bundle would be {len(data)} bytes, over the {BUNDLE_BYTES_MAX} limit")
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise BundleError(f"cannot write bundle {path}: {exc.strerror}") from exc
    return len(data)


def decode_bundle(data: bytes, network: bytes) -> list[bytes]:
    """The entries of a bundle for this network; a BundleError says what is wrong."""
    if len(data) > BUNDLE_BYTES_MAX:
        raise BundleError(f"oversized bundle: {len(data)} bytes, limit {BUNDLE_BYTES_MAX}")
    if not data:
        raise BundleError("not a Tallystick bundle: the file is empty")
    if not data.startswith(MAGIC[: min(len(data), len(MAGIC))]):
        raise BundleError("not a Tallystick bundle (bad magic)")
    if len(data) < _HEAD + _SUM:
        raise BundleError(f"truncated bundle: {len(data)} bytes is shorter than its header")
    if data[len(MAGIC)] != VERSION:
        raise BundleError(f"bundle format version {data[len(MAGIC)]} is not supported")
    body, checksum = data[:-_SUM], data[-_SUM:]
    bundle_net = data[len(MAGIC) + 1 : len(MAGIC) + 33]
    (count,) = struct.unpack(">I", data[len(MAGIC) + 33 : _HEAD])
    pos, out = _HEAD, []
    for i in range(count):
        if pos + 2 > len(body):
            raise _truncated_or_corrupt(body, checksum, f"entry #{i} of {count} is missing")
        (n,) = struct.unpack(">H", body[pos : pos + 2])
        if n > ENTRY_BYTES_MAX:
            raise _truncated_or_corrupt(
                body, checksum, f"entry #{i} of {count} is {n} bytes, over the "
                f"{ENTRY_BYTES_MAX}-byte limit of an entry")
        if pos + 2 + n > len(body):
            raise _truncated_or_corrupt(body, checksum, f"entry #{i} of {count} is cut short")
        out.append(body[pos + 2 : pos + 2 + n])
        pos += 2 + n
    if pos != len(body):
        raise _truncated_or_corrupt(body, checksum, f"{len(body) - pos} bytes after the entries")
    if hashlib.blake2b(body, digest_size=_SUM).digest() != checksum:
        raise BundleError("corrupt bundle: checksum failed (the file was damaged or altered)")
    if bundle_net != network:
        raise BundleError(
            f"bundle is for network {id_text(bundle_net)}, this wallet is on {id_text(network)}"
        )
    return out


def _truncated_or_corrupt(body: bytes, checksum: bytes, what: str) -> BundleError:
    if hashlib.blake2b(body, digest_size=_SUM).digest() == checksum:
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
