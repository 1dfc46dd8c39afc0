"""Bad payment bundles (DESIGN §8): each gets its own clear error, exit 1, and changes
nothing that was stored. Every import is a real ``tally bundle import`` process on a
real wallet home; set-up uses the Wallet API in-process."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from nacl.signing import SigningKey

import wallet.bundle as bundle_mod
from tests.clikit import (
    PASSPHRASE,
    Home,
    api_fund,
    api_wallets,
    check_failed,
    ok,
    run,
    run_many,
    store_snapshot,
    tj,
)
from wallet.address import parse_address
from wallet.bundle import BUNDLE_BYTES_MAX, MAGIC, decode_bundle, encode_bundle
from wallet.encoding import ENTRY_BYTES_MAX, Genesis, Policy, Vote, id_text, parse_entry
from wallet.errors import BundleError
from wallet.keys import FAST_INSECURE
from wallet.wallet import Wallet

pytestmark = pytest.mark.slow

_HEAD = bundle_mod.HEAD_BYTES


def _network(home: Path, name: str) -> Path:
    """A q = 0 network whose issuer wallet lives at ``home``; its genesis file."""
    issuer = SigningKey.generate()
    g = Genesis(name, "EUR", 2, bytes(issuer.verify_key), (), 0,
                Policy(5000, 10000, 100000, 3600)).signed(issuer)
    Wallet.create_network(home, g, issuer, PASSPHRASE, limits=FAST_INSECURE).close()
    path = home.parent / f"{name}.genesis"
    path.write_bytes(g.raw)
    return path


@dataclass(frozen=True)
class World:
    """Alice paid Bob; ``good`` carries it. Bob has not imported it. ``foreign`` is a
    bundle of another network."""

    network: bytes
    bob: Home
    good: bytes
    foreign: bytes
    foreign_network: bytes


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    d = tmp_path_factory.mktemp("bundles")
    genesis = _network(d / "issuer", "home")
    alice, bob = api_wallets(genesis, d / "alice", d / "bob")
    api_fund(d / "issuer", alice, 10000)
    w = Wallet.open(alice.path)
    try:
        to = parse_address(bob.address)
        for amount in (100, 250, 300):
            w.pay(to, amount, PASSPHRASE, memo="rent")
        good = encode_bundle(w.network, w.bodies(w.export_ids(to)))
        network = w.network
    finally:
        w.close()

    other = _network(d / "other-issuer", "other")
    (carol,) = api_wallets(other, d / "carol")
    api_fund(d / "other-issuer", carol, 500)
    w = Wallet.open(carol.path)
    try:
        foreign = encode_bundle(w.network, w.bodies(w.export_ids()))
        foreign_network = w.network
    finally:
        w.close()
    return World(network, bob, good, foreign, foreign_network)


def _entries(data: bytes, network: bytes) -> list[bytes]:
    return decode_bundle(data, network)


def _flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def _forged_last_signature(w: World) -> bytes:
    """The good bundle with its last entry's signature altered; checksum recomputed."""
    bodies = _entries(w.good, w.network)
    bodies[-1] = _flip(bodies[-1], len(bodies[-1]) - 10)
    return encode_bundle(w.network, bodies)


def _forged_amount(w: World) -> bytes:
    """A send whose amount was raised after signing (its signature no longer holds)."""
    bodies = _entries(w.good, w.network)
    i = max(i for i, b in enumerate(bodies) if struct.pack(">Q", 300) in b)
    at = bodies[i].index(struct.pack(">Q", 300))
    bodies[i] = bodies[i][:at] + struct.pack(">Q", 30000) + bodies[i][at + 8 :]
    return encode_bundle(w.network, bodies)


def _garbage_entry(w: World) -> bytes:
    bodies = _entries(w.good, w.network)
    return encode_bundle(w.network, [*bodies, b"\x00" * 120])


def _foreign_entries(w: World) -> bytes:
    """Another network's entries under this network's header, checksum recomputed."""
    return encode_bundle(w.network, _entries(w.foreign, w.foreign_network))


def _stranger_vote(w: World) -> bytes:
    bodies = _entries(w.good, w.network)
    b = parse_entry(bodies[-1])
    stranger = SigningKey.generate()
    vote = Vote(w.network, b.device, b.seq, b.id, bytes(stranger.verify_key)).signed(stranger)
    return encode_bundle(w.network, [*bodies, vote.raw])


def _with_checksum(body: bytes) -> bytes:
    return body + hashlib.blake2b(body, digest_size=32).digest()


def _oversized_entry(w: World) -> bytes:
    n = ENTRY_BYTES_MAX + 1
    return bundle_mod.encode_head(w.network, 1) + _with_checksum(
        struct.pack(">IH", 1, n) + b"\0" * n)


def _section_missing(w: World) -> bytes:
    """A header that promises two sections, then one."""
    return bundle_mod.encode_head(w.network, 2) + w.good[_HEAD:]


def _trailing(w: World) -> bytes:
    return w.good + b"extra"


def encode_v1(network: bytes, bodies: list[bytes]) -> bytes:
    """A bundle of layout version 1 (one list, one checksum of everything before it),
    as tally wrote them before sections."""
    parts = [MAGIC, bytes((1,)), network, struct.pack(">I", len(bodies))]
    for b in bodies:
        parts += [struct.pack(">H", len(b)), b]
    return _with_checksum(b"".join(parts))


# name, make(world) -> file bytes, what the message must say
CASES: list[tuple[str, Callable[[World], bytes], str]] = [
    ("truncated: last byte", lambda w: w.good[:-1], "truncated or corrupt bundle"),
    ("truncated: half", lambda w: w.good[: len(w.good) // 2], "truncated or corrupt bundle"),
    ("truncated: inside the header", lambda w: w.good[:20], "truncated bundle: 20 bytes"),
    ("truncated: inside the magic", lambda w: w.good[:3], "truncated bundle: 3 bytes"),
    ("empty file", lambda w: b"", "the file is empty"),
    ("bit flip: entry body", lambda w: _flip(w.good, _HEAD + 60, 3),
     "checksum of section 1 of 1 failed"),
    ("bit flip: signature", lambda w: _flip(w.good, len(w.good) - 40, 7),
     "checksum of section 1 of 1 failed"),
    ("bit flip: checksum", lambda w: _flip(w.good, len(w.good) - 1),
     "checksum of section 1 of 1 failed"),
    ("bit flip: network id", lambda w: _flip(w.good, len(MAGIC) + 5),
     "checksum of the header failed"),
    ("bit flip: section count", lambda w: _flip(w.good, _HEAD - 33),
     "checksum of the header failed"),
    ("bit flip: entry count", lambda w: _flip(w.good, _HEAD + 3), "corrupt bundle"),
    ("bit flip: version", lambda w: _flip(w.good, len(MAGIC), 1), "format version 0"),
    ("a section missing", _section_missing, "section 2 of 2 is missing"),
    ("version 1: bit flip", lambda w: _flip(encode_v1(w.network, _entries(w.good, w.network)),
                                            _HEAD, 2), "checksum failed"),
    ("bit flip: magic", lambda w: _flip(w.good, 0), "bad magic"),
    ("another network's bundle", lambda w: w.foreign, "bundle is for network"),
    ("another network's entries", _foreign_entries, "belongs to another network"),
    ("not a bundle: text", lambda w: b"hello, this is a shopping list\n" * 4, "bad magic"),
    ("forged signature, checksum recomputed", _forged_last_signature, "bad signature"),
    ("forged amount, checksum recomputed", _forged_amount, "bad signature"),
    ("malformed entry, checksum recomputed", _garbage_entry, "entry #"),
    ("vote by a key that is no witness", _stranger_vote, "not a witness here"),
    ("entry over the entry size limit", _oversized_entry, "over the 1024-byte limit"),
    ("bytes after the entries", _trailing, "5 bytes after the entries"),
]


def test_every_bad_bundle_is_refused_and_changes_nothing(world: World, tmp_path: Path) -> None:
    files = []
    for i, (_, make, _) in enumerate(CASES):
        f = tmp_path / f"case{i}.bundle"
        f.write_bytes(make(world))
        files.append(f)
    before = store_snapshot(world.bob.path)
    assert before["entries"] > 0
    procs = run_many([(world.bob.path, "bundle", "import", f) for f in files])
    for (name, _, want), p in zip(CASES, procs, strict=True):
        msg = check_failed(p)
        assert want in msg, f"{name}: {msg}"
    assert store_snapshot(world.bob.path) == before

    # The messages name what was wrong: the two networks, the entry that failed.
    foreign = check_failed(procs[[c[0] for c in CASES].index("another network's bundle")])
    assert id_text(world.foreign_network) in foreign and id_text(world.network) in foreign
    forged = check_failed(procs[[c[0] for c in CASES].index(
        "forged signature, checksum recomputed")])
    assert f"entry #{len(_entries(world.good, world.network)) - 1}:" in forged


def test_each_bad_bundle_case_differs_from_the_good_one(world: World) -> None:
    """The cases are real damage: none decodes to the good bundle's entries."""
    good = _entries(world.good, world.network)
    assert len(good) >= 6
    for name, make, _ in CASES:
        data = make(world)
        assert data != world.good, name
        try:
            got = decode_bundle(data, world.network)
        except BundleError:
            continue
        assert got != good, name


def test_oversized_sparse_file_is_refused_unread(world: World, tmp_path: Path) -> None:
    big = tmp_path / "big.bundle"
    with open(big, "wb") as f:
        f.write(world.good[:_HEAD])
    os.truncate(big, BUNDLE_BYTES_MAX + 1)  # sparse: no disk, no time
    before = store_snapshot(world.bob.path)
    msg = check_failed(run(world.bob.path, "bundle", "import", big))
    assert "oversized bundle" in msg and str(BUNDLE_BYTES_MAX) in msg
    assert store_snapshot(world.bob.path) == before


def test_read_bundle_never_reads_past_the_limit(monkeypatch: pytest.MonkeyPatch,
                                               world: World, tmp_path: Path) -> None:
    """A file whose size stat does not tell (a device, a pipe) is read up to the limit."""
    monkeypatch.setattr(bundle_mod, "BUNDLE_BYTES_MAX", 4096)
    if Path("/dev/zero").exists():
        with pytest.raises(BundleError, match="oversized bundle"):
            bundle_mod.read_bundle(Path("/dev/zero"), world.network)
    f = tmp_path / "small-limit.bundle"
    f.write_bytes(world.good + b"\0" * 4096)
    with pytest.raises(BundleError, match="oversized bundle"):
        bundle_mod.read_bundle(f, world.network)
    with pytest.raises(BundleError, match="cannot read bundle"):
        bundle_mod.read_bundle(tmp_path, world.network)


def test_a_replayed_bundle_is_nothing_new_and_a_newer_one_is_taken(tmp_path: Path) -> None:
    genesis = _network(tmp_path / "issuer", "replay")
    alice, bob = api_wallets(genesis, tmp_path / "alice", tmp_path / "bob")
    api_fund(tmp_path / "issuer", alice, 1000)
    first = tmp_path / "first.bundle"
    tj(alice.path, "pay", "--yes", bob.address, "1")
    exported = tj(alice.path, "bundle", "export", first, "--for", bob.address)
    assert tj(bob.path, "bundle", "import", first)["new"] == exported["entries"]

    before = store_snapshot(bob.path)
    text = ok(bob.path, "bundle", "import", first)  # exit 0: not an error to stop on
    assert f"nothing new: all {exported['entries']} entries" in text
    assert store_snapshot(bob.path) == before

    # A later bundle repeats what bob holds and adds one payment: that is no replay.
    tj(alice.path, "pay", "--yes", bob.address, "2")
    second = tmp_path / "second.bundle"
    exported2 = tj(alice.path, "bundle", "export", second, "--for", bob.address)
    doc = tj(bob.path, "bundle", "import", second)
    assert (doc["entries"], doc["new"]) == (exported2["entries"], 1)
    assert store_snapshot(bob.path)["entries"] == before["entries"] + 1
    got = tj(bob.path, "receive")["received"]
    assert sorted(r["amount_minor"] for r in got) == [100, 200]


def test_good_bundle_still_imports_after_the_bad_ones(world: World, tmp_path: Path) -> None:
    """The refusals left bob's wallet able to take the good bundle whole."""
    f = tmp_path / "good.bundle"
    f.write_bytes(world.good)
    before = store_snapshot(world.bob.path)
    doc = tj(world.bob.path, "bundle", "import", f)
    assert doc["new"] == doc["entries"] == len(_entries(world.good, world.network))
    assert store_snapshot(world.bob.path)["entries"] == before["entries"] + doc["new"]
    got = tj(world.bob.path, "receive")["received"]
    assert sorted(r["amount_minor"] for r in got) == [100, 250, 300]


def test_a_version_1_bundle_still_reads(world: World) -> None:
    """Bundles written before sections (layout version 1) carry the same entries."""
    bodies = _entries(world.good, world.network)
    assert decode_bundle(encode_v1(world.network, bodies), world.network) == bodies
