"""``bundle export --for`` from the sections a wallet keeps ready (``wallet.export_cache``):
the bundle carries exactly the closure computed afresh, whatever happened to the
sections file — appended to by a commit that never happened, deleted, merged after
many commits — and the payee takes it whole. Exports are real ``tally`` processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clikit import PASSPHRASE, Home, api_fund, api_network, api_wallets, run, tj
from wallet.address import parse_address
from wallet.bundle import decode_bundle
from wallet.encoding import parse_entry
from wallet.export_cache import SECTIONS_MAX
from wallet.wallet import Wallet

pytestmark = pytest.mark.slow


def _fresh_closure(home: Path, to: str) -> set[bytes]:
    w = Wallet.open(home)
    try:
        return set(w.export_ids(parse_address(to)))
    finally:
        w.close()


def _exported(home: Path, to: str, file: Path) -> tuple[set[bytes], dict]:
    doc = tj(home, "bundle", "export", "--for", to, file)
    w = Wallet.open(home)
    try:
        bodies = decode_bundle(file.read_bytes(), w.network)
    finally:
        w.close()
    ids = [parse_entry(b, verify=False).id for b in bodies]
    assert len(ids) == len(set(ids)), "an entry carried twice"
    assert doc["entries"] == len(ids) and doc["bytes"] == file.stat().st_size
    return set(ids), doc


def _sections(home: Path) -> list[Path]:
    return sorted(home.glob("export-*.sections"))


def _pay(home: Path, to: str, amounts: list[int]) -> None:
    w = Wallet.open(home)
    try:
        for a in amounts:
            w.pay(parse_address(to), a, PASSPHRASE)
    finally:
        w.close()


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Home, Home]:
    api_network(tmp_path, "cache")
    alice, bob = api_wallets(tmp_path / "g", tmp_path / "alice", tmp_path / "bob")
    api_fund(tmp_path / "issuer", alice, 100_000)
    return alice, bob


def test_the_bundle_is_the_closure_whatever_befell_the_sections(
        pair: tuple[Home, Home], tmp_path: Path) -> None:
    alice, bob = pair
    f = tmp_path / "b.bundle"
    _pay(alice.path, bob.address, [100, 200])
    assert _sections(alice.path) == [], "a wallet that never exported keeps no sections"
    got, _ = _exported(alice.path, bob.address, f)
    assert got == _fresh_closure(alice.path, bob.address)
    (sections,) = _sections(alice.path)

    with open(sections, "ab") as junk:  # a commit that appended, then never happened
        junk.write(b"\x00garbage that no record counts")
    _pay(alice.path, bob.address, [300])
    got, _ = _exported(alice.path, bob.address, f)
    assert got == _fresh_closure(alice.path, bob.address)

    sections.unlink()  # lost: made again from the ledger
    got, _ = _exported(alice.path, bob.address, f)
    assert got == _fresh_closure(alice.path, bob.address)
    assert len(_sections(alice.path)) == 1

    _pay(alice.path, bob.address, [1] * (SECTIONS_MAX + 3))  # one section per commit
    got, _ = _exported(alice.path, bob.address, f)
    assert got == _fresh_closure(alice.path, bob.address)
    assert len(_sections(alice.path)) == 1, "a merge leaves one file behind it"

    doc = tj(bob.path, "bundle", "import", f)
    assert doc["new"] > 0
    received = tj(bob.path, "receive")["received"]
    assert sum(r["amount_minor"] for r in received) == 100 + 200 + 300 + SECTIONS_MAX + 3


def test_a_payee_section_carries_what_only_that_payee_needs(
        pair: tuple[Home, Home], tmp_path: Path) -> None:
    """Carol paid bob; alice's bundle for bob carries carol's payment (and what funds
    it), her bundle for someone else does not."""
    alice, bob = pair
    (carol,) = api_wallets(tmp_path / "g", tmp_path / "carol")
    api_fund(tmp_path / "issuer", carol, 5_000)
    _pay(carol.path, bob.address, [700])
    c = Wallet.open(carol.path)
    try:
        bodies = c.bodies(c.export_ids(parse_address(bob.address)))
    finally:
        c.close()
    a = Wallet.open(alice.path)
    try:
        a.ingest_bodies(bodies)  # alice holds carol's payment to bob
    finally:
        a.close()
    for_bob, _ = _exported(alice.path, bob.address, tmp_path / "bob.bundle")
    for_carol, _ = _exported(alice.path, carol.address, tmp_path / "carol.bundle")
    assert for_bob == _fresh_closure(alice.path, bob.address)
    assert for_carol == _fresh_closure(alice.path, carol.address)
    carols = {parse_entry(b, verify=False).id for b in bodies}
    assert carols <= for_bob
    assert not carols <= for_carol


def test_doctor_checks_the_sections(pair: tuple[Home, Home], tmp_path: Path) -> None:
    """`tally doctor` finds the sections sound, then names a damaged byte in them."""
    alice, bob = pair
    _pay(alice.path, bob.address, [100])
    _exported(alice.path, bob.address, tmp_path / "b.bundle")
    assert tj(alice.path, "doctor")["ok"] is True
    (sections,) = _sections(alice.path)
    data = bytearray(sections.read_bytes())
    data[len(data) // 2] ^= 0x10
    sections.write_bytes(bytes(data))
    p = run(alice.path, "doctor")
    assert p.returncode == 1
    assert "export sections: corrupt bundle: checksum of section" in p.stdout, p.stdout
    assert "the next `bundle export --for` makes the sections again" in p.stdout
    sections.unlink()  # what the doctor says to do: the next export makes them again
    got, _ = _exported(alice.path, bob.address, tmp_path / "b.bundle")
    assert got == _fresh_closure(alice.path, bob.address)
    assert tj(alice.path, "doctor")["ok"] is True
