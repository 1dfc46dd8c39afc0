"""Pairing requests and the account-signed open block of wallet.pairing."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from wallet.encoding import Kind, parse_entry, sign_message, verify_message
from wallet.errors import EncodingError
from wallet.pairing import (
    PREFIX,
    PairingRequest,
    make_pairing_request,
    parse_pairing_request,
    sign_open,
)

NETWORK = bytes(range(32))
OTHER_NETWORK = bytes(range(1, 33))
ACCOUNT_KEY = SigningKey(b"\x33" * 32)
ACCOUNT = bytes(ACCOUNT_KEY.verify_key)


def _device() -> SigningKey:
    return SigningKey(b"\x11" * 32)


def _raw(text: str) -> bytes:
    body = text[len(PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _text(raw: bytes) -> str:
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _signed_raw(network: bytes, key: SigningKey, label_bytes: bytes) -> bytes:
    """A request's bytes built by hand, signed properly, whatever the label bytes."""
    payload = (network + ACCOUNT + bytes(key.verify_key) + bytes((len(label_bytes),))
               + label_bytes)
    return payload + sign_message(key, Kind.PAIRING, payload)


def test_round_trip() -> None:
    key = _device()
    req = make_pairing_request(NETWORK, ACCOUNT, key, "phone")
    assert req.network == NETWORK
    assert req.device == bytes(key.verify_key)
    assert req.label == "phone"
    text = req.to_text()
    assert text.startswith("tally-pair:")
    assert "=" not in text and "+" not in text and "/" not in text
    assert parse_pairing_request(text) == req
    assert parse_pairing_request(text, NETWORK) == req
    assert parse_pairing_request(f"  {text}\n") == req


def test_canonical_payload_and_signature() -> None:
    key = _device()
    req = make_pairing_request(NETWORK, ACCOUNT, key, "till 2")
    payload = NETWORK + ACCOUNT + bytes(key.verify_key) + bytes((6,)) + b"till 2"
    assert req.payload() == payload
    assert verify_message(bytes(key.verify_key), Kind.PAIRING, payload, req.signature)
    assert _raw(req.to_text()) == payload + req.signature
    # the signature is domain-separated: it does not verify as another kind of message
    assert not verify_message(bytes(key.verify_key), Kind.HELLO, payload, req.signature)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    network=st.binary(min_size=32, max_size=32),
    label=st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=16
    ).filter(lambda s: s.strip()),
)
def test_round_trip_property(seed: bytes, network: bytes, label: str) -> None:
    req = make_pairing_request(network, ACCOUNT, SigningKey(seed), label)
    assert parse_pairing_request(req.to_text(), network) == req


def test_label_at_limit_and_multibyte() -> None:
    label = "é" * 32  # 64 UTF-8 bytes
    req = make_pairing_request(NETWORK, ACCOUNT, _device(), label)
    assert parse_pairing_request(req.to_text()).label == label


@pytest.mark.parametrize(
    ("label", "match"),
    [
        ("x" * 65, "65 UTF-8 bytes"),
        ("é" * 33, "66 UTF-8 bytes"),
        ("", "empty"),
        ("   ", "empty"),
        ("phone\x1b[2J", "U\\+001B"),
        ("evil\u202eenohp", "U\\+202E"),
        ("two\nlines", "U\\+000A"),
    ],
)
def test_make_refuses_bad_label(label: str, match: str) -> None:
    with pytest.raises(EncodingError, match=match):
        make_pairing_request(NETWORK, ACCOUNT, _device(), label)


def test_make_refuses_bad_network() -> None:
    with pytest.raises(EncodingError, match="network must be 32 bytes"):
        make_pairing_request(NETWORK[:31], ACCOUNT, _device(), "phone")


def test_parse_bad_prefix() -> None:
    text = make_pairing_request(NETWORK, ACCOUNT, _device(), "phone").to_text()
    for bad in ("tally:" + text[len(PREFIX) :], text[len(PREFIX) :], "TALLY-PAIR:x", ""):
        with pytest.raises(EncodingError, match="does not start with 'tally-pair:'"):
            parse_pairing_request(bad)


@pytest.mark.parametrize("mangle", ["+", "/", "=", " ", "!"])
def test_parse_bad_base64(mangle: str) -> None:
    text = make_pairing_request(NETWORK, ACCOUNT, _device(), "phone").to_text()
    bad = text[:20] + mangle + text[21:]
    with pytest.raises(EncodingError, match="base64url"):
        parse_pairing_request(bad)


def test_parse_impossible_base64_length() -> None:
    text = make_pairing_request(NETWORK, ACCOUNT, _device(), "phone").to_text()
    # drop characters until the length is 1 mod 4: no byte string encodes to that
    body = text[len(PREFIX) :]
    while len(body) % 4 != 1:
        body = body[:-1]
    with pytest.raises(EncodingError, match="base64url"):
        parse_pairing_request(PREFIX + body)


def test_parse_non_canonical_base64() -> None:
    raw = _signed_raw(NETWORK, _device(), b"ab")  # 131 bytes: last char carries spare bits
    text = _text(raw)
    assert len(raw) % 3 != 0
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(text[-1])
    bad = text[:-1] + alphabet[last | 1]
    assert bad != text and _raw(bad) == raw
    with pytest.raises(EncodingError, match="canonical"):
        parse_pairing_request(bad)


def test_parse_too_long() -> None:
    with pytest.raises(EncodingError, match="too long"):
        parse_pairing_request(PREFIX + "A" * 2000)


@pytest.mark.parametrize("keep", [0, 10, 64, 65, 66, 70, 100])
def test_parse_truncated(keep: int) -> None:
    raw = _raw(make_pairing_request(NETWORK, ACCOUNT, _device(), "phone").to_text())
    with pytest.raises(EncodingError, match="truncated"):
        parse_pairing_request(_text(raw[:keep]))


def test_parse_truncated_signature_by_one_byte() -> None:
    raw = _raw(make_pairing_request(NETWORK, ACCOUNT, _device(), "phone").to_text())
    with pytest.raises(EncodingError, match="truncated"):
        parse_pairing_request(_text(raw[:-1]))


def test_parse_trailing_bytes() -> None:
    raw = _raw(make_pairing_request(NETWORK, ACCOUNT, _device(), "phone").to_text())
    with pytest.raises(EncodingError, match="1 trailing bytes"):
        parse_pairing_request(_text(raw + b"\x00"))


def test_parse_label_length_over_limit() -> None:
    raw = _signed_raw(NETWORK, _device(), b"x" * 65)
    with pytest.raises(EncodingError, match="label is 65 bytes, limit 64"):
        parse_pairing_request(_text(raw))


def test_parse_label_not_utf8() -> None:
    raw = _signed_raw(NETWORK, _device(), b"\xff\xfe")
    with pytest.raises(EncodingError, match="not UTF-8"):
        parse_pairing_request(_text(raw))


def test_parse_label_with_control_characters() -> None:
    raw = _signed_raw(NETWORK, _device(), b"ok\x1b]0;pwned\x07")
    with pytest.raises(EncodingError, match="control character"):
        parse_pairing_request(_text(raw))


@pytest.mark.parametrize("where", ["network", "device", "label", "signature"])
def test_parse_bad_signature(where: str) -> None:
    raw = bytearray(_raw(make_pairing_request(NETWORK, ACCOUNT, _device(), "phone").to_text()))
    index = {"network": 3, "device": 40, "label": 66, "signature": len(raw) - 5}[where]
    raw[index] ^= 0x01
    with pytest.raises(EncodingError, match="bad signature"):
        parse_pairing_request(_text(bytes(raw)))


def test_parse_signature_by_another_key() -> None:
    req = make_pairing_request(NETWORK, ACCOUNT, _device(), "phone")
    forged = sign_message(SigningKey(b"\x22" * 32), Kind.PAIRING, req.payload())
    with pytest.raises(EncodingError, match="bad signature"):
        parse_pairing_request(_text(req.payload() + forged))


def test_parse_another_network() -> None:
    text = make_pairing_request(OTHER_NETWORK, ACCOUNT, _device(), "phone").to_text()
    assert parse_pairing_request(text).network == OTHER_NETWORK
    with pytest.raises(EncodingError, match="another network"):
        parse_pairing_request(text, NETWORK)


def test_errors_name_the_pairing_request() -> None:
    with pytest.raises(EncodingError) as info:
        parse_pairing_request("nope")
    assert info.value.what == "pairing request"


# --- signing the open ----------------------------------------------------------------


def test_sign_open() -> None:
    device = _device()
    account = ACCOUNT_KEY
    req = parse_pairing_request(
        make_pairing_request(NETWORK, ACCOUNT, device, "phone").to_text(), NETWORK
    )
    block = sign_open(req, account)
    assert block.kind == Kind.OPEN
    assert block.seq == 0
    assert block.network == NETWORK
    assert block.device == bytes(device.verify_key)
    assert block.account == bytes(account.verify_key)
    assert block.label == "phone"
    assert block.signer == bytes(account.verify_key)
    assert parse_entry(block.raw) == block  # signature verifies under the account key


def test_sign_open_refuses_unverified_request() -> None:
    req = make_pairing_request(NETWORK, ACCOUNT, _device(), "phone")
    tampered = dataclasses.replace(req, label="laptop")
    with pytest.raises(EncodingError, match="bad signature"):
        sign_open(tampered, SigningKey(b"\x33" * 32))


def test_a_request_for_the_account_key_as_device_is_refused() -> None:
    with pytest.raises(EncodingError, match="is the account key"):
        make_pairing_request(NETWORK, ACCOUNT, ACCOUNT_KEY, "phone")


def test_sign_open_refuses_a_request_made_for_another_account() -> None:
    req = make_pairing_request(NETWORK, ACCOUNT, _device(), "phone")
    with pytest.raises(EncodingError, match="made for another account"):
        sign_open(req, SigningKey(b"\x44" * 32))


def test_the_open_carries_the_request_signature_and_a_forged_one_is_refused() -> None:
    req = make_pairing_request(NETWORK, ACCOUNT, _device(), "phone")
    block = sign_open(req, ACCOUNT_KEY)
    assert block.device_sig == req.signature
    # The account signs an open whose device signature is not the device's: the
    # account's own signature verifies, the open is still refused (open_unsigned).
    forged = dataclasses.replace(block, device_sig=bytes(64)).body()
    with pytest.raises(EncodingError, match="open_unsigned"):
        parse_entry(forged + ACCOUNT_KEY.sign(forged).signature)
    # The same device signature under another account's open does not verify either.
    other = SigningKey(b"\x44" * 32)
    stolen = dataclasses.replace(block, account=bytes(other.verify_key)).body()
    with pytest.raises(EncodingError, match="open_unsigned"):
        parse_entry(stolen + other.sign(stolen).signature)


def test_request_dataclass_is_frozen_and_checked() -> None:
    req = make_pairing_request(NETWORK, ACCOUNT, _device(), "phone")
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.label = "x"  # type: ignore[misc]
    with pytest.raises(EncodingError, match="signature must be 64 bytes"):
        PairingRequest(NETWORK, ACCOUNT, req.device, "phone", b"\x00" * 63)
    with pytest.raises(EncodingError, match="device must be 32 bytes"):
        PairingRequest(NETWORK, ACCOUNT, req.device[:5], "phone", req.signature)
