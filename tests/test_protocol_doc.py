"""Facts docs/protocol.md states, checked against the code where that is cheap.

The document is meant to let a stranger implement the formats from it alone, so each
number, name and rule it states here must be the code's: versions, lengths, limits,
the request URI's letter case, where a wallet keeps its keys, what the genesis file
holds, how the issuing device is recognised, and the bundle's dependency order.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest
from nacl.bindings import crypto_box_SEALBYTES
from nacl.public import SealedBox
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from sync import messages
from sync.errors import CloseCode
from tests.test_protocol_vectors import DOCUMENTED
from tests.vectors import key, pub
from wallet import address, bundle, encoding, keys, pairing
from wallet.encoding import Block, Kind, id_from_text, parse_entry, parse_genesis
from wallet.errors import EncodingError, WalletError
from wallet.ledger import INVALID, R_ISSUE_NOT_ISSUER, VALID, Ledger

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
TEXT = DOC.read_text()


def flat(text: str) -> str:
    """The text with every run of white space made one space (lines wrap anywhere)."""
    return re.sub(r"\s+", " ", text)


def section(title: str) -> str:
    """One ``## title`` section of the document, its white space flattened."""
    start = TEXT.index(f"\n## {title}\n")
    end = TEXT.find("\n## ", start + 1)
    return flat(TEXT[start : end if end >= 0 else len(TEXT)])


def number(pattern: str, text: str) -> int:
    """The one integer the pattern's group matches in ``text``."""
    found = re.findall(pattern, text)
    assert len(found) == 1, (pattern, found)
    return int(found[0].replace(",", ""))


# ------------------------------------------------------------------ versions


def test_format_version_is_the_codes() -> None:
    assert number(r"Format version: \*\*(\d+)\*\*", flat(TEXT)) == encoding.VERSION
    conv = section("Conventions")
    assert number(r"\| version \| u8 \| `(\d+)` \|", conv) == encoding.VERSION
    assert f"`54 53 {encoding.VERSION:02x} k`" in conv


def test_hello_version_is_the_sync_protocol_version() -> None:
    sync = section("Sync protocol")
    assert number(r"Protocol version: \*\*(\d+)\*\*", sync) == messages.PROTOCOL_VERSION
    assert number(r"\| 1 \| Hello \| `version:u8 \((\d+)\)", sync) == messages.PROTOCOL_VERSION


def test_kinds_are_the_codes() -> None:
    row = re.search(r"\| kind \| u8 \| ([^|]+) \|", section("Conventions"))
    assert row is not None
    stated = {name: int(n) for name, n in re.findall(r"(\w+) (\d+)", row.group(1))}
    assert stated == {k.name.lower(): int(k) for k in Kind}


def test_message_types_and_close_codes_are_the_codes() -> None:
    sync = section("Sync protocol")
    types = {int(n): name for n, name in re.findall(r"\| (\d+) \| ([A-Z][A-Za-z0-9]+) \| `", sync)}
    assert types == {n: cls.__name__ for cls, n in messages._TYPES.items()}
    codes = {int(n): name for n, name in re.findall(r"\| (\d+) \| ([A-Z_]+) \| ", sync)}
    assert codes == {int(c): c.name for c in CloseCode}


# ------------------------------------------------------------------ limits


def test_field_limits_are_the_codes() -> None:
    blocks = section("Blocks")
    assert number(r"label:var8\(text ≤ (\d+)\)", blocks) == encoding.LABEL_BYTES_MAX
    assert number(r"request_id:var8\(≤ (\d+)\)", blocks) == encoding.REQUEST_ID_BYTES_MAX
    assert number(r"memo:var16\(≤ (\d+)\)", blocks) == encoding.MEMO_BYTES_MAX
    genesis = section("Genesis (kind 32), signed by the issuer")
    assert number(r"name:var8\(text ≤ (\d+)\)", genesis) == encoding.NAME_BYTES_MAX
    assert number(r"n:u8 \(≤ (\d+)\)", genesis) == encoding.WITNESSES_MAX
    conv = section("Conventions")
    assert number(r"an entry over (\d+) bytes", conv) == encoding.ENTRY_BYTES_MAX
    assert number(r"a genesis over (\d+)", conv) == messages.GENESIS_BYTES_MAX


def test_block_offsets_are_the_bytes() -> None:
    assert "header 0–3, network 4–35, device 36–67, seq 68–75, prev 76–107" in section("Blocks")
    receive = bytes.fromhex(DOCUMENTED["receive"])
    assert receive[4:36] == id_from_text(DOCUMENTED["network_id"])
    assert receive[36:68] == pub(5)
    assert int.from_bytes(receive[68:76], "big") == 1
    assert receive[76:108] == parse_entry(bytes.fromhex(DOCUMENTED["open"])).id


def test_memo_limit_counts_the_sealed_box() -> None:
    blocks = section("Blocks")
    room = encoding.MEMO_BYTES_MAX - crypto_box_SEALBYTES
    assert number(r"at most \*\*(\d+) bytes\*\* of UTF-8 text", blocks) == room == 464
    assert number(r"which gives `[^`]+`, (\d+) bytes more than the text", blocks) == (
        crypto_box_SEALBYTES)
    recipient = key(6).verify_key.to_curve25519_public_key()
    assert len(SealedBox(recipient).encrypt(b"x" * room)) == encoding.MEMO_BYTES_MAX
    from wallet.wallet import check_memo

    check_memo("é" * (room // 2))  # UTF-8 bytes count, not characters
    with pytest.raises(WalletError, match=str(room)):
        check_memo("é" * (room // 2) + "x")
    assert "fit in 464 bytes of UTF-8" in section("Payment request URI")


# ------------------------------------------------------------------ address


def test_address_facts_are_the_codes() -> None:
    sec = section("Device address")
    assert number(r"an address is \*\*(\d+) characters\*\*", sec) == address.ADDRESS_CHARS
    assert number(r"first (\d+) bytes of the network id", sec) == address.NETWORK_CHECK_BYTES
    assert f'address = "{address.ADDRESS_PREFIX}" ||' in sec
    assert f"a `{address.OLD_ADDRESS_PREFIX}…` address" in sec
    raw_bytes = address.NETWORK_CHECK_BYTES + 2 * encoding.KEY_BYTES + 4
    assert number(r"(\d+) bytes make \d+ base32 characters", sec) == raw_bytes
    assert number(r"\d+ bytes make (\d+) base32 characters", sec) == (
        address.ADDRESS_CHARS - len(address.ADDRESS_PREFIX))
    assert number(r"of the (\d+) bytes before it", sec) == raw_bytes - 4
    with pytest.raises(EncodingError, match="old-format"):
        address.parse_address("tly1" + DOCUMENTED["address"][4:])


# ------------------------------------------------------------------ payment request


def _request(**kw: object) -> address.PaymentRequest:
    net = id_from_text(DOCUMENTED["network_id"])
    fields = {"amount": 1250} | kw
    return address.PaymentRequest(net, address.Address.of(net, pub(4), pub(6)), **fields)


def test_request_grammar_is_the_codes_order() -> None:
    sec = section("Payment request URI")
    grammar = re.search(r"tally:ADDRESS\?(\S+)", sec)
    assert grammar is not None
    assert tuple(re.findall(r"(\w+)=", grammar.group(1))) == address._ORDER


def test_request_letter_case_and_escapes_are_as_stated() -> None:
    sec = section("Payment request URI")
    assert "`%XX` with **upper-case** hex digits" in sec
    assert "as **lowercase** hex" in sec
    assert "characters `A–Z a–z 0–9 - . _ ~`" in sec
    uri = _request(request_id=b"\x0a\xbc", memo="é/ ~x").uri()
    assert "&id=0abc&" in uri and uri.endswith("&memo=%C3%A9%2F%20~x")
    assert address.parse_request(uri).memo == "é/ ~x"
    for bad in (uri.replace("%C3%A9", "%c3%a9"), uri.replace("id=0abc", "id=0ABC"),
                uri.replace("%20", "+"), uri.replace("~x", "%7Ex")):
        with pytest.raises(EncodingError, match="canonical"):
            address.parse_request(bad)


def test_request_amount_may_not_be_left_out_and_zero_fields_are() -> None:
    uri = _request(expires=1767225600).uri()
    with pytest.raises(EncodingError, match="amount"):
        address.parse_request(uri.replace("&amount=1250", ""))
    with pytest.raises(EncodingError, match="more than 0"):
        address.parse_request(uri.replace("amount=1250", "amount=0"))
    with pytest.raises(EncodingError):
        address.parse_request(uri.replace("exp=1767225600", "exp=0"))
    with pytest.raises(EncodingError):
        address.parse_request(uri.replace("amount=1250", "amount=01250"))
    assert "`amount` may not be left out" in section("Payment request URI")


# ------------------------------------------------------------------ pairing, bundle


def test_pairing_facts_are_the_codes() -> None:
    sec = section("Pairing request")
    assert f'request = "{pairing.PREFIX}" ||' in sec
    stated = set()
    for a, b in re.findall(r"U\+([0-9A-F]{4})(?:–U\+([0-9A-F]{4}))?", sec):
        stated |= {chr(c) for c in range(int(a, 16), int(b or a, 16) + 1)}
    assert stated == set(pairing._BIDI_CONTROLS)
    assert number(r"The label is 1 to (\d+) bytes", sec) == encoding.LABEL_BYTES_MAX


def test_bundle_facts_are_the_codes() -> None:
    sec = section("Payment bundle")
    assert f'magic "{bundle.MAGIC.decode()}" version:u8 ({bundle.VERSION})' in sec
    assert number(r"a bundle at most (\d+) MiB", sec) << 20 == bundle.BUNDLE_BYTES_MAX


def test_bundle_dependency_order_is_the_stated_rule() -> None:
    """prev, the device's open, the claimed entry and the voted block come first."""
    names = ["vote", "revoke", "send", "receive", "open", "issue", "open_issuer"]
    entries = [parse_entry(bytes.fromhex(DOCUMENTED[n])) for n in names]
    ordered = bundle.dependency_order(entries)
    assert bundle.dependency_faults(ordered) == []
    pos = {e.id: i for i, e in enumerate(ordered)}
    by = dict(zip(names, entries, strict=True))
    for later, earlier in (("issue", "open_issuer"), ("receive", "open"),
                           ("receive", "issue"), ("send", "receive"), ("revoke", "send"),
                           ("vote", "send")):
        assert pos[by[earlier].id] < pos[by[later].id], (earlier, later)
    faults = bundle.dependency_faults([by["issue"], by["open_issuer"]])
    assert [what for _, _, what in faults] == ["its prev", "its device's open"]


def test_bundle_order_puts_the_routing_revoke_before_the_receive() -> None:
    """A receive of a payment to a revoked sibling comes after the revoke naming it."""
    net = id_from_text(DOCUMENTED["network_id"])
    issue = parse_entry(bytes.fromhex(DOCUMENTED["issue"]))  # to the phone (5)
    revoke = parse_entry(bytes.fromhex(DOCUMENTED["revoke"]))  # phone → shop (6)
    shop_open = pairing.make_open(net, key(4), key(6), "shop")
    claim = Block(Kind.RECEIVE, net, pub(6), 1, shop_open.id, claim=issue.id).signed(key(6))
    assert bundle.dependency_faults([shop_open, issue, claim, revoke]) == [
        (2, 3, "the revoke that routes it")]
    ordered = bundle.dependency_order([claim, revoke, issue, shop_open])
    assert ordered.index(revoke) < ordered.index(claim)


# ------------------------------------------------------------------ keys at rest


def test_key_file_facts_are_the_codes() -> None:
    sec = section("Keys at rest")
    assert f'`"{keys.FORMAT}"`' in sec
    assert f"| `version` | `{keys.FORMAT_VERSION}` (the key file's own version) |" in sec
    row = re.search(r"\| `kind` \| ([^|]+) \|", sec)
    assert row is not None and tuple(re.findall(r'`"(\w+)"`', row.group(1))) == keys.KINDS
    assert f'data = "{keys._CONTEXT.decode()}" || kind' in sec
    assert number(r"a (\d+)-byte salt", sec) == argon2id.SALTBYTES
    box = SecretBox.NONCE_SIZE + keys.SEED_BYTES + SecretBox.MACBYTES
    assert number(r"BASE64 of (\d+) bytes", sec) == box
    assert number(r"a (\d+)-byte nonce", sec) == SecretBox.NONCE_SIZE
    assert number(r"at most (\d+) KiB", sec) << 10 == keys.KEY_FILE_BYTES_MAX
    assert f"`opslimit` outside {argon2id.OPSLIMIT_MIN}–{keys.OPSLIMIT_CEILING}" in sec
    assert f"`memlimit` outside {argon2id.MEMLIMIT_MIN} bytes–1 GiB" in sec
    assert keys.MEMLIMIT_CEILING == 1 << 30
    i, m = keys.INTERACTIVE, keys.SENSITIVE
    assert f"interactive limits ({i.opslimit}, {i.memlimit >> 20} MiB)" in sec
    assert f"moderate ones ({m.opslimit}, {m.memlimit >> 20} MiB)" in sec
    assert f"{keys.PHRASE_WORDS}-word BIP-39 English" in sec


def test_genesis_file_and_wallet_keys_are_where_the_document_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`network create` writes the signed genesis bytes; the keys are key files in
    HOME/wallet.db's meta table; the issuing device is the one the issuer opened."""
    from tui.cli import main
    from wallet.wallet import DB_NAME, Wallet

    monkeypatch.setenv("TALLY_INSECURE_FAST_KDF", "1")
    monkeypatch.setenv("TALLY_PASSPHRASE", "pass phrase")
    home = tmp_path / "home"
    assert main(["--home", str(home), "network", "create", "doc", "--currency", "EUR",
                 "--decimals", "2"]) == 0
    sec = section("Genesis (kind 32), signed by the issuer")
    assert "by default `HOME/network.genesis`" in sec
    data = (home / "network.genesis").read_bytes()
    genesis = parse_genesis(data)
    assert genesis.raw == data  # exactly the signed bytes, nothing around them
    assert f"`HOME/{DB_NAME}`" in section("Keys at rest")
    with sqlite3.connect(home / DB_NAME) as db:
        records = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'key.%'"))
        assert db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0] == data
    assert set(records) == {"key.issuer", "key.device"}
    opened = {}
    for name, value in records.items():
        kind, signing_key = keys.decrypt_secret(bytes(value), "pass phrase")
        assert name == f"key.{kind}"
        opened[kind] = signing_key
    assert bytes(opened["issuer"].verify_key) == genesis.issuer
    w = Wallet.open(home)
    try:
        device = w.ledger.devices[bytes(opened["device"].verify_key)]
        assert device.issuing and device.account == genesis.issuer
    finally:
        w.close()


def test_only_the_device_the_issuer_opened_may_issue() -> None:
    genesis = parse_genesis(bytes.fromhex(DOCUMENTED["genesis"]))
    net = genesis.network_id
    entries = [parse_entry(bytes.fromhex(DOCUMENTED[n])) for n in ("open_issuer", "issue", "open")]
    phone_open = entries[2]
    forged = Block(Kind.ISSUE, net, pub(5), 1, phone_open.id, to_account=pub(4),
                   to_device=pub(6), amount=1).signed(key(5))
    ledger = Ledger(genesis)
    ledger.add([*entries, forged])
    assert ledger.status[entries[1].id].state == VALID
    assert ledger.status[forged.id].state == INVALID
    assert ledger.status[forged.id].reason == R_ISSUE_NOT_ISSUER
    assert f"(`{R_ISSUE_NOT_ISSUER}`)" in section("Genesis (kind 32), signed by the issuer")


def test_an_open_without_the_devices_signature_is_refused() -> None:
    phone_open = parse_entry(bytes.fromhex(DOCUMENTED["open"]))
    assert isinstance(phone_open, Block)
    unsigned = Block(Kind.OPEN, phone_open.network, phone_open.device, 0,
                     account=phone_open.account, label=phone_open.label,
                     device_sig=bytes(64))
    with pytest.raises(EncodingError, match=encoding.OPEN_UNSIGNED):
        unsigned.signed(key(4))
    assert f"(`{encoding.OPEN_UNSIGNED}`)" in section("Blocks")
    # an open for another account than the one the device asked to join fails the same way
    other = SigningKey(bytes([9]) * 32)
    moved = Block(Kind.OPEN, phone_open.network, phone_open.device, 0,
                  account=bytes(other.verify_key), label=phone_open.label,
                  device_sig=phone_open.device_sig)
    with pytest.raises(EncodingError, match=encoding.OPEN_UNSIGNED):
        moved.signed(other)
