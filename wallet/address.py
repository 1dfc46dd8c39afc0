"""Device addresses and ``tally:`` payment requests (docs/protocol.md has the grammar)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from urllib.parse import quote, unquote

from wallet.encoding import ID_BYTES, id_from_text, id_text
from wallet.errors import EncodingError

ADDRESS_PREFIX = "tly1"
REQUEST_SCHEME = "tally:"
_CHECK_BYTES = 4


@dataclass(frozen=True, slots=True)
class Address:
    """A recipient device: its account key and its device key."""

    account: bytes
    device: bytes

    def text(self) -> str:
        """``tly1`` + lowercase base32 of account || device || 4-byte BLAKE2b checksum."""
        raw = self.account + self.device
        check = hashlib.blake2b(raw, digest_size=_CHECK_BYTES).digest()
        return ADDRESS_PREFIX + base64.b32encode(raw + check).decode().rstrip("=").lower()

    def __str__(self) -> str:
        return self.text()


def parse_address(text: str) -> Address:
    """Parse an address; a typo fails the checksum and says so."""
    t = text.strip()
    if not t.lower().startswith(ADDRESS_PREFIX):
        raise EncodingError("address", f"{t[:12]!r}… does not start with {ADDRESS_PREFIX}")
    body = t[len(ADDRESS_PREFIX) :].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (ValueError, TypeError) as exc:
        raise EncodingError("address", "not base32 after the tly1 prefix") from exc
    if len(raw) != 64 + _CHECK_BYTES:
        raise EncodingError("address", f"wrong length ({len(t)} characters, expected 113)")
    if hashlib.blake2b(raw[:64], digest_size=_CHECK_BYTES).digest() != raw[64:]:
        raise EncodingError("address", "checksum failed: a character is wrong")
    return Address(raw[:32], raw[32:64])


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """What a payee asks for: fits in a QR code as a ``tally:`` URI.

    Amounts and limits are minor units; ``expires`` is a Unix time (0: never);
    ``floor_*`` are the till's limits when lower than the network's (0: the network's).
    """

    network: bytes
    address: Address
    amount: int
    request_id: bytes = b""
    expires: int = 0
    memo: str = ""
    floor_payment: int = 0
    floor_account: int = 0
    floor_till: int = 0

    def uri(self) -> str:
        """The canonical URI: parameters in this order, zero or empty ones left out."""
        parts = [f"net={id_text(self.network)}", f"amount={self.amount}"]
        if self.request_id:
            parts.append(f"id={self.request_id.hex()}")
        if self.expires:
            parts.append(f"exp={self.expires}")
        if self.memo:
            parts.append(f"memo={quote(self.memo, safe='')}")
        for name, value in (("fp", self.floor_payment), ("fa", self.floor_account),
                            ("ft", self.floor_till)):
            if value:
                parts.append(f"{name}={value}")
        return f"{REQUEST_SCHEME}{self.address.text()}?{'&'.join(parts)}"


_ORDER = ("net", "amount", "id", "exp", "memo", "fp", "fa", "ft")


def parse_request(uri: str) -> PaymentRequest:
    """Parse a ``tally:`` URI strictly; refuse unknown, repeated or misordered fields."""
    u = uri.strip()
    if not u.startswith(REQUEST_SCHEME):
        raise EncodingError("payment request", "does not start with tally:")
    addr_text, _, query = u[len(REQUEST_SCHEME) :].partition("?")
    address = parse_address(addr_text)
    fields: dict[str, str] = {}
    last = -1
    for part in query.split("&") if query else []:
        name, eq, value = part.partition("=")
        if not eq or name not in _ORDER:
            raise EncodingError("payment request", f"unknown field {name!r}")
        pos = _ORDER.index(name)
        if pos <= last:
            raise EncodingError("payment request", f"field {name!r} repeated or out of order")
        last = pos
        fields[name] = value
    if "net" not in fields or "amount" not in fields:
        raise EncodingError("payment request", "needs net= and amount=")

    def num(name: str) -> int:
        v = fields.get(name, "0")
        if not v.isdigit() or (len(v) > 1 and v[0] == "0"):
            raise EncodingError("payment request", f"{name}={v!r} is not a whole number")
        return int(v)

    try:
        rid = bytes.fromhex(fields.get("id", ""))
    except ValueError as exc:
        raise EncodingError("payment request", "id= is not hex") from exc
    if len(rid) > 32:
        raise EncodingError("payment request", "id= longer than 32 bytes")
    network = id_from_text(fields["net"])
    assert len(network) == ID_BYTES
    req = PaymentRequest(
        network, address, num("amount"), rid, num("exp"), unquote(fields.get("memo", "")),
        num("fp"), num("fa"), num("ft"),
    )
    if req.amount <= 0:
        raise EncodingError("payment request", "amount must be more than 0")
    if req.uri() != u:
        raise EncodingError("payment request", "not in canonical form")
    return req
