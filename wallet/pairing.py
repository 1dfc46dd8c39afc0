"""Device pairing (DESIGN §1): a new device joins an account without the account key.

The new device makes its own key and shows a pairing request (``tally devices pair
ACCOUNT_ADDRESS``); the account key's holder checks it and signs the device's ``open``
block (``tally devices add REQUEST``). The request's canonical payload is
``encoding.open_payload``::

    network  32 bytes
    account  32 bytes   the account it asks to join (from the key holder's address)
    device   32 bytes   the new device's public key
    len      u8         length of label, at most 64
    label    len bytes  UTF-8, the name people will know the device by

and its signature is the device key's over that payload under ``Kind.PAIRING``
(``encoding.sign_message``). The ``open`` carries that same signature (``device_sig``),
so an open proves the device asked to join exactly this account on this network. As
text the request is ``tally-pair:`` followed by unpadded base64url of
``payload || signature``.

The request proves nothing about *who* sent it: whoever signs the ``open`` should
check that the device's short key (``encoding.short``) matches the one the new device
shows.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from dataclasses import dataclass

from nacl.signing import SigningKey

from wallet.encoding import (
    KEY_BYTES,
    LABEL_BYTES_MAX,
    SIG_BYTES,
    Block,
    Kind,
    open_payload,
    short,
    short_id,
    sign_message,
    verify_message,
)
from wallet.errors import EncodingError

PREFIX = "tally-pair:"
"""What every pairing request's text starts with."""

NETWORK_BYTES = 32
"""Length of a network id."""

_WHAT = "pairing request"
_PAYLOAD_MIN = NETWORK_BYTES + 2 * KEY_BYTES + 1
_TEXT_CHARS_MAX = len(PREFIX) + 4 * (_PAYLOAD_MIN + LABEL_BYTES_MAX + SIG_BYTES) // 3 + 4
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _label_problem(label: str) -> str | None:
    """Why ``label`` cannot name a device, or None.

    A label is shown to the person who approves the pairing, so it may not be empty
    and may not hold control characters (terminal escapes, bidi overrides) that could
    make it display as something else.
    """
    if not label.strip():
        return "the device label is empty; name the device (e.g. 'phone')"
    size = len(label.encode("utf-8"))
    if size > LABEL_BYTES_MAX:
        return f"the device label is {size} UTF-8 bytes, limit {LABEL_BYTES_MAX}"
    for ch in label:
        if unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS:
            return f"the device label holds the control character U+{ord(ch):04X}"
    return None


@dataclass(frozen=True, slots=True)
class PairingRequest:
    """A new device's signed request to join ``account`` on ``network`` as ``device``."""

    network: bytes
    account: bytes
    device: bytes
    label: str
    signature: bytes

    def __post_init__(self) -> None:
        """Refuse fields of the wrong size or a label that cannot name a device."""
        for name, value, size in (
            ("network", self.network, NETWORK_BYTES),
            ("account", self.account, KEY_BYTES),
            ("device", self.device, KEY_BYTES),
            ("signature", self.signature, SIG_BYTES),
        ):
            if not isinstance(value, bytes) or len(value) != size:
                raise EncodingError(_WHAT, f"{name} must be {size} bytes")
        problem = _label_problem(self.label)
        if problem:
            raise EncodingError(_WHAT, problem)

    def payload(self) -> bytes:
        """The canonical bytes the device signs: network || account || device || var8(label)."""
        return open_payload(self.network, self.account, self.device, self.label)

    def verify(self) -> bool:
        """True when ``signature`` is the device key's over ``payload()``."""
        return verify_message(self.device, Kind.PAIRING, self.payload(), self.signature)

    def to_text(self) -> str:
        """The request as text: ``tally-pair:`` + unpadded base64url of payload || signature."""
        raw = self.payload() + self.signature
        return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_pairing_request(
    network: bytes, account: bytes, device_key: SigningKey, label: str
) -> PairingRequest:
    """A request of ``device_key`` to join ``account`` on ``network``, signed by the device.

    Raises ``EncodingError`` for a field of the wrong size, an unusable label, or an
    account key equal to the device key.
    """
    device = bytes(device_key.verify_key)
    if device == account:
        raise EncodingError(_WHAT, "the device key is the account key; a device needs its own key")
    unsigned = PairingRequest(network, account, device, label, bytes(SIG_BYTES))
    sig = sign_message(device_key, Kind.PAIRING, unsigned.payload())
    return PairingRequest(network, account, device, label, sig)


def parse_pairing_request(text: str, network: bytes | None = None) -> PairingRequest:
    """Parse and verify a pairing request written by ``PairingRequest.to_text``.

    Surrounding whitespace is ignored. With ``network`` given, refuse a request made for
    another network. Raises ``EncodingError`` naming what is wrong: the prefix, the
    base64url, a truncated or over-long payload, the label, or the signature.
    """
    text = text.strip()
    if not text.startswith(PREFIX):
        raise EncodingError(_WHAT, f"does not start with {PREFIX!r}")
    body = text[len(PREFIX) :]
    if len(text) > _TEXT_CHARS_MAX:
        raise EncodingError(_WHAT, f"{len(text)} characters is too long to be a pairing request")
    if not set(body) <= _B64URL or len(body) % 4 == 1:
        raise EncodingError(_WHAT, "not unpadded base64url after the prefix (mangled in copying?)")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise EncodingError(_WHAT, "not unpadded base64url after the prefix") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
        raise EncodingError(_WHAT, "not canonical base64url (mangled in copying?)")
    if len(raw) < _PAYLOAD_MIN:
        raise EncodingError(_WHAT, f"truncated: {len(raw)} bytes (copied only in part?)")
    req_network = raw[:NETWORK_BYTES]
    account = raw[NETWORK_BYTES : NETWORK_BYTES + KEY_BYTES]
    device = raw[NETWORK_BYTES + KEY_BYTES : NETWORK_BYTES + 2 * KEY_BYTES]
    label_len = raw[NETWORK_BYTES + 2 * KEY_BYTES]
    if label_len > LABEL_BYTES_MAX:
        raise EncodingError(_WHAT, f"label is {label_len} bytes, limit {LABEL_BYTES_MAX}")
    end = _PAYLOAD_MIN + label_len + SIG_BYTES
    if len(raw) < end:
        raise EncodingError(_WHAT, f"truncated: {len(raw)} bytes of {end} (copied only in part?)")
    if len(raw) > end:
        raise EncodingError(_WHAT, f"{len(raw) - end} trailing bytes after the signature")
    label_raw = raw[_PAYLOAD_MIN : _PAYLOAD_MIN + label_len]
    try:
        label = label_raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncodingError(_WHAT, "the device label is not UTF-8") from exc
    request = PairingRequest(
        req_network, account, device, label, raw[_PAYLOAD_MIN + label_len : end]
    )
    if not request.verify():
        raise EncodingError(_WHAT, f"bad signature (not signed by device {short(device)}…)")
    if device == account:
        raise EncodingError(_WHAT, "the device key is the account key; a device needs its own key")
    if network is not None and req_network != network:
        raise EncodingError(
            _WHAT,
            f"made for another network ({short_id(req_network)}…); this wallet is on "
            f"{short_id(network)}…",
        )
    return request


def sign_open(request: PairingRequest, account_key: SigningKey) -> Block:
    """The paired device's ``open`` block (seq 0), signed by the account key.

    Re-checks the request's signature first, since a ``PairingRequest`` can be built by
    hand, and refuses a request made for another account. Raises ``EncodingError``.
    """
    if not request.verify():
        raise EncodingError(_WHAT, f"bad signature (not signed by device {short(request.device)}…)")
    account = bytes(account_key.verify_key)
    if request.account != account:
        raise EncodingError(
            _WHAT,
            f"made for another account ({short(request.account)}…); this key is account "
            f"{short(account)}…",
        )
    return Block(
        Kind.OPEN, request.network, request.device, 0, account=account, label=request.label,
        device_sig=request.signature,
    ).signed(account_key)


def make_open(
    network: bytes, account_key: SigningKey, device_key: SigningKey, label: str
) -> Block:
    """A device's ``open`` when one party holds both keys (``init``, ``restore``, the
    issuing device, tests): the device's pairing request, signed into its open."""
    request = make_pairing_request(network, bytes(account_key.verify_key), device_key, label)
    return sign_open(request, account_key)
