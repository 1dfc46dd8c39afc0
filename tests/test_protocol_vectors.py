"""docs/protocol.md's test vectors, rebuilt from fixed keys, match byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vectors import build
from wallet.address import parse_address, parse_request
from wallet.bundle import decode_bundle
from wallet.crdt import decode_update
from wallet.encoding import Block, Vote, id_from_text, parse_entry, parse_genesis
from wallet.pairing import parse_pairing_request

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def documented() -> dict[str, str]:
    """The vectors as written in docs/protocol.md."""
    text = DOC.read_text().split("<!-- vectors -->", 1)[1]
    block = text.split("```", 2)[1]
    out = {}
    for line in block.strip().splitlines():
        name, _, value = line.partition(": ")
        out[name] = value.strip()
    return out


BUILT = build()
DOCUMENTED = documented()


def test_every_vector_is_documented() -> None:
    assert set(BUILT) == set(DOCUMENTED)


@pytest.mark.parametrize("name", sorted(BUILT))
def test_vector_bytes_match_the_document(name: str) -> None:
    assert BUILT[name] == DOCUMENTED[name]


@pytest.mark.parametrize(
    "name", ["open_issuer", "issue", "open", "receive", "send", "revoke", "vote"]
)
def test_documented_entries_parse_and_reencode_identically(name: str) -> None:
    raw = bytes.fromhex(DOCUMENTED[name])
    entry = parse_entry(raw)
    assert entry.raw == raw
    assert isinstance(entry, Block | Vote)
    assert entry.body() + entry.signature == raw


def test_documented_genesis_parses_and_names_the_network() -> None:
    g = parse_genesis(bytes.fromhex(DOCUMENTED["genesis"]))
    assert g.network_id == id_from_text(DOCUMENTED["network_id"])
    assert (g.name, g.currency, g.decimals, g.quorum) == ("vector", "EUR", 2, 1)


def test_documented_texts_parse() -> None:
    req = parse_request(DOCUMENTED["request"])
    assert req.amount == 1250 and req.memo == "Coffee & cake"
    assert req.address == parse_address(DOCUMENTED["address"])
    pr = parse_pairing_request(DOCUMENTED["pairing"])
    assert pr.label == "till 1"


def test_documented_yjs_item_and_bundle_decode() -> None:
    items = decode_update(bytes.fromhex(DOCUMENTED["yjs_item"]), max_bytes=1 << 20,
                          max_items=10)
    assert [i.key for i in items] == [DOCUMENTED["issue_id"]]
    assert items[0].value == bytes.fromhex(DOCUMENTED["issue"])
    net = parse_genesis(bytes.fromhex(DOCUMENTED["genesis"])).network_id
    bodies = decode_bundle(bytes.fromhex(DOCUMENTED["bundle"]), net)
    assert bodies == [bytes.fromhex(DOCUMENTED["open_issuer"]), bytes.fromhex(DOCUMENTED["issue"])]
