"""Device addresses and ``tally:`` payment requests (docs/protocol.md has the grammar)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from urllib.parse import quote, unquote

from wallet.encoding import ID_BYTES, KEY_BYTES, id_from_text, id_text
from wallet.errors import EncodingError

ADDRESS_PREFIX = "tly2"
"""What every address starts with: format 2, the one that names its network."""
OLD_ADDRESS_PREFIX = "tly1"
ADDRESS_PREFIXES = (ADDRESS_PREFIX, OLD_ADDRESS_PREFIX)
"""What an address of any format starts with (an old one is refused with its reason)."""
REQUEST_SCHEME = "tally:"
NETWORK_CHECK_BYTES = 6
"""The network check an address carries: the first 6 bytes of the network id, which as
text are the first 8 characters of the network id (``encoding.short_id``)."""
_CHECK_BYTES = 4
_RAW_BYTES = NETWORK_CHECK_BYTES + 2 * KEY_BYTES + _CHECK_BYTES
ADDRESS_CHARS = len(ADDRESS_PREFIX) + (8 * _RAW_BYTES + 4) // 5
"""The length of an address as text (123 characters)."""
BASE32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")
"""The characters of lowercase base32, in which keys and addresses are written."""


def network_check(network: bytes) -> bytes:
    """The part of a network id an address carries."""
    assert len(network) == ID_BYTES, "a network id is 32 bytes"
    return network[:NETWORK_CHECK_BYTES]


@dataclass(frozen=True, slots=True)
class Address:
    """A recipient device on one network: the network's check, its account and device keys."""

    network_check: bytes
    account: bytes
    device: bytes

    def __post_init__(self) -> None:
        """An address is made whole or not at all."""
        assert len(self.network_check) == NETWORK_CHECK_BYTES, "network check is 6 bytes"
        assert len(self.account) == KEY_BYTES and len(self.device) == KEY_BYTES

    @classmethod
    def of(cls, network: bytes, account: bytes, device: bytes) -> Address:
        """The address of ``device`` of ``account`` on the network with this id."""
        return cls(network_check(network), account, device)

    def belongs_to(self, network: bytes) -> bool:
        """True when the address was made on the network with this id."""
        return self.network_check == network_check(network)

    def network_text(self) -> str:
        """The network check as text: the first 8 characters of that network's id."""
        return base64.urlsafe_b64encode(self.network_check).decode()

    def text(self) -> str:
        """``tly2`` + lowercase base32 of network check || account || device || checksum.

        The checksum is BLAKE2b with a 4-byte digest (``digest_size=4``) of the 70 bytes
        before it.
        """
        raw = self.network_check + self.account + self.device
        check = hashlib.blake2b(raw, digest_size=_CHECK_BYTES).digest()
        return ADDRESS_PREFIX + base64.b32encode(raw + check).decode().rstrip("=").lower()

    def __str__(self) -> str:
        return self.text()


def parse_address(text: str) -> Address:
    """Parse an address; say plainly what is wrong with one that is cut, mistyped or old."""
    t = text.strip()
    low = t.lower()
    if low.startswith(OLD_ADDRESS_PREFIX):
        raise EncodingError(
            "address", f"{t[:12]!r}… is an old-format address that does not name its "
            "network; ask the payee for a new one (`tally address`)")
    if not low.startswith(ADDRESS_PREFIX):
        raise EncodingError("address", f"{t[:12]!r}… does not start with {ADDRESS_PREFIX}")
    body = low[len(ADDRESS_PREFIX) :]
    bad = sorted(set(body) - BASE32_CHARS)
    if bad:
        raise EncodingError(
            "address", f"holds {bad[0]!r}, which no address has (letters a-z and digits 2-7)"
        )
    if len(t) < ADDRESS_CHARS:
        raise EncodingError(
            "address", f"cut short: {len(t)} of {ADDRESS_CHARS} characters; copy all of it"
        )
    if len(t) > ADDRESS_CHARS:
        raise EncodingError(
            "address", f"{len(t)} characters, {len(t) - ADDRESS_CHARS} more than an address "
            "has: two pasted together?")
    raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    if hashlib.blake2b(raw[:-_CHECK_BYTES], digest_size=_CHECK_BYTES).digest() != raw[-4:]:
        raise EncodingError("address", "checksum failed: a character is wrong")
    n = NETWORK_CHECK_BYTES
    address = Address(raw[:n], raw[n : n + KEY_BYTES], raw[n + KEY_BYTES : n + 2 * KEY_BYTES])
    if address.text() != ADDRESS_PREFIX + body:  # the last character's spare bits are zero
        raise EncodingError("address", "its last character is wrong (not one an address ends in)")
    return address


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
        if not (v.isascii() and v.isdigit()) or (len(v) > 1 and v[0] == "0"):
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
    if not address.belongs_to(network):
        raise EncodingError(
            "payment request", f"its address is of network {address.network_text()}…, "
            f"its net= is {id_text(network)[:8]}…: the request was tampered with or mangled")
    req = PaymentRequest(
        network, address, num("amount"), rid, num("exp"), unquote(fields.get("memo", "")),
        num("fp"), num("fa"), num("ft"),
    )
    if req.amount <= 0:
        raise EncodingError("payment request", "amount must be more than 0")
    if req.uri() != u:
        raise EncodingError("payment request", "not in canonical form")
    return req
