"""docs/protocol.md's test vectors, rebuilt from fixed keys, match byte for byte; the
inputs the document lists beside them are the ones they are built from; and the code
reads back every vector, including the two built by hand from the document's words."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from nacl.secret import SecretBox

from tests.vectors import INPUTS, KEYS, build, inputs_table, pub, value
from wallet.address import NETWORK_CHECK_BYTES, parse_address, parse_request
from wallet.bundle import decode_bundle
from wallet.crdt import decode_update, item_client_id
from wallet.encoding import (
    SIG_BYTES,
    Block,
    Kind,
    Vote,
    id_from_text,
    open_payload,
    parse_entry,
    parse_genesis,
    verify_message,
)
from wallet.keys import decrypt_secret, seed_from_phrase
from wallet.pairing import parse_pairing_request

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def documented() -> dict[str, str]:
    """The vectors as written in docs/protocol.md."""
    text = DOC.read_text().split("<!-- vectors -->", 1)[1]
    block = text.split("```", 2)[1]
    out = {}
    for line in block.strip().splitlines():
        name, _, text = line.partition(": ")
        out[name] = text.strip()
    return out


def documented_inputs() -> str:
    """The table of the vectors' inputs as written in docs/protocol.md."""
    text = DOC.read_text()
    return text.split("<!-- vector inputs -->", 1)[1].split("<!-- /vector inputs -->")[0]


BUILT = build()
DOCUMENTED = documented()


def raw(name: str) -> bytes:
    return bytes.fromhex(DOCUMENTED[name])


def network() -> bytes:
    return id_from_text(DOCUMENTED["network_id"])


def test_every_vector_is_documented() -> None:
    assert list(BUILT) == list(DOCUMENTED)


@pytest.mark.parametrize("name", list(BUILT))
def test_vector_bytes_match_the_document(name: str) -> None:
    assert BUILT[name] == DOCUMENTED[name]


def test_every_vector_has_its_inputs_listed_beside_it() -> None:
    assert list(INPUTS) == list(BUILT)
    assert documented_inputs().strip() == inputs_table()


@pytest.mark.parametrize(
    "name", ["open_issuer", "issue", "open", "receive", "send", "revoke", "vote"]
)
def test_documented_entries_parse_and_reencode_identically(name: str) -> None:
    entry = parse_entry(raw(name))
    assert entry.raw == raw(name)
    assert isinstance(entry, Block | Vote)
    assert entry.body() + entry.signature == raw(name)
    assert entry.network == network()


@pytest.mark.parametrize("name", ["open_issuer", "issue", "open", "receive", "send", "revoke"])
def test_documented_blocks_have_their_listed_inputs(name: str) -> None:
    b = parse_entry(raw(name))
    i = INPUTS[name]
    assert isinstance(b, Block)
    assert (b.device, b.seq) == (value(i["device"]), i["seq"])
    signer = {Kind.OPEN: b.account, Kind.REVOKE: b.account}.get(b.kind, b.device)
    assert signer == value(i["signed by"])
    for field in ("to_account", "to_device", "amount", "request_id", "memo", "label"):
        if field in i:
            assert getattr(b, field) == value(i[field]), field


def test_documented_genesis_parses_and_names_the_network() -> None:
    g = parse_genesis(raw("genesis"))
    i = INPUTS["genesis"]
    assert g.network_id == network() == hashlib.blake2b(raw("genesis"), digest_size=32).digest()
    assert (g.name, g.currency, g.decimals, g.quorum) == (
        i["name"], i["currency"], i["decimals"], i["quorum"])
    assert g.issuer == pub(KEYS["issuer"]) and g.witnesses == (pub(KEYS["witness"]),)


def test_the_opens_carry_the_devices_signature_over_open_payload() -> None:
    phone = parse_entry(raw("open"))
    assert isinstance(phone, Block)
    payload = open_payload(network(), phone.account, phone.device, phone.label)
    assert payload == raw("open_payload")
    assert phone.device_sig == raw("open_device_sig")
    header = b"TS" + bytes((2, Kind.PAIRING))
    assert verify_message(phone.device, Kind.PAIRING, raw("open_payload"), phone.device_sig)
    from nacl.signing import VerifyKey

    VerifyKey(phone.device).verify(header + raw("open_payload"), raw("open_device_sig"))
    # the open's bytes: ... label, then the device's signature, then the account's
    assert raw("open")[-2 * SIG_BYTES : -SIG_BYTES] == raw("open_device_sig")
    mint = parse_entry(raw("open_issuer"))
    assert isinstance(mint, Block) and mint.account == parse_genesis(raw("genesis")).issuer
    assert verify_message(mint.device, Kind.PAIRING,
                          open_payload(network(), mint.account, mint.device, mint.label),
                          mint.device_sig)


def test_address_raw_is_what_the_document_says_and_the_address_its_base32() -> None:
    a = raw("address_raw")
    i = INPUTS["address_raw"]
    n = NETWORK_CHECK_BYTES
    assert len(a) == 74
    assert a[:n] == network()[:6]
    assert a[n : n + 32] == value(i["account"]) and a[n + 32 : n + 64] == value(i["device"])
    assert a[-4:] == hashlib.blake2b(a[:-4], digest_size=4).digest()
    assert a[-4:] != hashlib.blake2b(a[:-4], digest_size=32).digest()[:4]
    text = DOCUMENTED["address"]
    assert text == "tly2" + base64.b32encode(a).decode().rstrip("=").lower()
    parsed = parse_address(text)
    assert parsed.network_check + parsed.account + parsed.device == a[:-4]
    assert parse_address(text.upper()) == parsed
    assert DOCUMENTED["network_id"].startswith(parsed.network_text())


def test_documented_texts_parse_to_their_inputs() -> None:
    req = parse_request(DOCUMENTED["request"])
    r = INPUTS["request"]
    assert (req.amount, req.request_id, req.expires, req.memo) == (
        r["amount"], r["id"], r["exp"], r["memo"])
    assert (req.floor_payment, req.floor_account, req.floor_till) == (
        r["fp"], value(r["fa"]), value(r["ft"]))
    assert req.address == parse_address(DOCUMENTED["address"])
    pr = parse_pairing_request(DOCUMENTED["pairing"], network())
    p = INPUTS["pairing"]
    assert (pr.account, pr.device, pr.label) == (
        value(p["account"]), value(p["device"]), p["label"])


def test_documented_yjs_item_and_bundle_decode() -> None:
    items = decode_update(raw("yjs_item"), max_bytes=1 << 20, max_items=10)
    assert [i.key for i in items] == [DOCUMENTED["issue_id"]]
    assert items[0].value == raw("issue")
    issue_id = id_from_text(DOCUMENTED["issue_id"])
    assert int(DOCUMENTED["yjs_client_id"]) == item_client_id(issue_id)
    assert int(DOCUMENTED["yjs_client_id"]) == int.from_bytes(issue_id[:8], "big") >> 11
    bodies = decode_bundle(raw("bundle"), network())
    assert bodies == [raw("open_issuer"), raw("issue")]


def test_documented_recovery_phrase_is_the_account_seed() -> None:
    assert seed_from_phrase(DOCUMENTED["recovery_phrase"]) == bytes([4]) * 32
    assert len(DOCUMENTED["recovery_phrase"].split()) == 24


def test_documented_key_file_opens_with_the_code() -> None:
    data = DOCUMENTED["key_file"].encode()
    passphrase = value(INPUTS["key_file_box_key"]["passphrase"])
    kind, key = decrypt_secret(data, passphrase)
    assert kind == "device" and bytes(key) == value(INPUTS["key_file"]["seed"])
    box = base64.b64decode(json.loads(data)["box"])
    assert len(box) == 72
    assert SecretBox(raw("key_file_box_key")).decrypt(box) == bytes(key)
    # the passphrase is taken after NFC: the composed form opens the file too
    assert decrypt_secret(data, "caf\u00e9")[1] == key
