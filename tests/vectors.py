"""The test vectors of docs/protocol.md, built from fixed seeds (Ed25519 is deterministic).

``INPUTS`` holds every vector's inputs as data: keys by role (``KEYS`` gives each role's
seed number), labels, amounts, the request's id, expiry, memo and floors, the challenge
bytes. ``build`` makes the vectors from those inputs and nothing else, and
``inputs_table`` writes the same inputs as the table the document shows beside the
vectors. ``python -m tests.vectors`` prints the vectors (``name: value`` lines, the
block after ``<!-- vectors -->``); ``python -m tests.vectors --inputs`` prints the table
(between ``<!-- vector inputs -->`` and ``<!-- /vector inputs -->``).

Two vectors are built here by hand, from the document's description alone, rather than
by the code: the address's raw bytes and the key file (the code draws a key file's
salt and nonce at random). ``tests/test_protocol_vectors.py`` checks that the code
reads both back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any

import nacl.pwhash.argon2id as argon2id
from nacl.secret import SecretBox
from nacl.signing import SigningKey

from sync.errors import CloseCode
from sync.messages import Close, Hello, Proof, encode
from sync.protocol import proof_payload
from wallet.address import Address, PaymentRequest
from wallet.bundle import encode_bundle
from wallet.crdt import encode_items, item_client_id
from wallet.encoding import (
    ZERO_ID,
    Block,
    Genesis,
    Kind,
    Policy,
    Vote,
    id_text,
    key_text,
    open_payload,
    sign_message,
)
from wallet.keys import phrase_from_seed
from wallet.pairing import make_pairing_request, sign_open

KEYS = {"issuer": 1, "witness": 2, "mint": 3, "account": 4, "phone": 5, "shop": 6, "node": 7}
"""The seed number of each role's key: ``key(n)`` has the seed of 32 bytes of value n.
The mint is the issuing device (its open is signed by the issuer); the phone and the
shop are two devices of one account (the shop is the phone's sibling)."""


@dataclass(frozen=True, slots=True)
class Key:
    """The key of a role of ``KEYS``; as an input, its public key."""

    role: str

    @property
    def seed(self) -> int:
        return KEYS[self.role]

    def __str__(self) -> str:
        return f"key({self.seed}) {self.role}"


@dataclass(frozen=True, slots=True)
class IdOf:
    """The id (BLAKE2b-256 of the signed bytes) of another vector's entry."""

    vector: str

    def __str__(self) -> str:
        return f"id(`{self.vector}`)"


@dataclass(frozen=True, slots=True)
class BytesOf:
    """Another vector's bytes (or text), as they stand in the vector block."""

    vector: str

    def __str__(self) -> str:
        return f"`{self.vector}`"


@dataclass(frozen=True, slots=True)
class Shown:
    """An input with how the document writes it."""

    value: Any
    text: str

    def __str__(self) -> str:
        return self.text


NETWORK = Shown(None, "`network_id`")
ZERO = Shown(ZERO_ID, "32 zero bytes")
ISSUER, WITNESS, MINT, ACCOUNT, PHONE, SHOP, NODE = (Key(r) for r in KEYS)

SYNC_CLIENT_CHALLENGE = bytes(range(32))
"""The challenge of the phone's Hello (``sync_hello``)."""
SYNC_SERVER_CHALLENGE = bytes([0xAA]) * 32
"""The node's own challenge, which its Proof (``sync_proof``) signs after the phone's."""
REQUEST_ID = bytes.fromhex("0102030405060708")
PLACEHOLDER_MEMO = Shown(
    bytes(48) + b"sealed",
    '54 bytes: 48 zero bytes, then ASCII "sealed" (a stand-in: a real sealed box is '
    "random)",
)
NO_BYTES = Shown(b"", "empty (length 0)")

INPUTS: dict[str, dict[str, Any]] = {
    "genesis": {
        "name": "vector", "currency": "EUR", "decimals": 2, "issuer": ISSUER,
        "witnesses": (WITNESS,), "quorum": 1, "floor_payment": 5000, "floor_account": 10000,
        "floor_till": 100000, "settle_period_s": 86400, "signed by": ISSUER,
    },
    "network_id": {"from": Shown(None, "BLAKE2b-256 of `genesis`, as text")},
    "open_issuer": {
        "network": NETWORK, "device": MINT, "seq": 0, "prev": ZERO, "account": ISSUER,
        "label": "mint", "device_sig": Shown(None, "by key(3) mint over its open_payload"),
        "signed by": ISSUER,
    },
    "issue": {
        "network": NETWORK, "device": MINT, "seq": 1, "prev": IdOf("open_issuer"),
        "to_account": ACCOUNT, "to_device": PHONE, "amount": 10000, "request_id": NO_BYTES,
        "memo": NO_BYTES, "signed by": MINT,
    },
    "issue_id": {"from": Shown(None, "id(`issue`) as text")},
    "open_payload": {"network": NETWORK, "account": ACCOUNT, "device": PHONE, "label": "phone"},
    "open_device_sig": {
        "over": Shown(None, "header(33) then `open_payload`"), "signed by": PHONE,
    },
    "open": {
        "network": NETWORK, "device": PHONE, "seq": 0, "prev": ZERO, "account": ACCOUNT,
        "label": "phone", "device_sig": BytesOf("open_device_sig"), "signed by": ACCOUNT,
    },
    "receive": {
        "network": NETWORK, "device": PHONE, "seq": 1, "prev": IdOf("open"),
        "claim": IdOf("issue"), "signed by": PHONE,
    },
    "send": {
        "network": NETWORK, "device": PHONE, "seq": 2, "prev": IdOf("receive"),
        "to_account": ACCOUNT, "to_device": SHOP, "amount": 1250, "request_id": REQUEST_ID,
        "memo": PLACEHOLDER_MEMO, "signed by": PHONE,
    },
    "revoke": {
        "network": NETWORK, "device": PHONE, "seq": 3, "prev": IdOf("send"),
        "account": ACCOUNT, "sibling": SHOP, "signed by": ACCOUNT,
    },
    "vote": {
        "network": NETWORK, "device": PHONE, "seq": 2, "block": IdOf("send"),
        "witness": WITNESS, "signed by": WITNESS,
    },
    "address_raw": {
        "network_check": Shown(None, "the first 6 bytes of the network id"),
        "account": ACCOUNT, "device": SHOP,
        "check": Shown(None, "BLAKE2b, digest_size 4, of the 70 bytes before it"),
    },
    "address": {"from": Shown(None, '"tly2" then lowercase unpadded base32 of `address_raw`')},
    "request": {
        "address": BytesOf("address"), "net": NETWORK, "amount": 1250, "id": REQUEST_ID,
        "exp": 1767225600, "memo": "Coffee & cake", "fp": 2000,
        "fa": Shown(0, "0 (left out)"), "ft": Shown(0, "0 (left out)"),
    },
    "pairing": {
        "network": NETWORK, "account": ACCOUNT, "device": SHOP, "label": "till 1",
        "signed by": SHOP,
    },
    "yjs_client_id": {"from": Shown(None, "the top 53 bits of id(`issue`), in decimal")},
    "yjs_item": {
        "client": BytesOf("yjs_client_id"), "key": BytesOf("issue_id"),
        "value": BytesOf("issue"),
    },
    "bundle": {"network": NETWORK, "entries": (BytesOf("open_issuer"), BytesOf("issue"))},
    "sync_hello": {
        "version": 2, "role": Shown(1, "1 (device)"), "network": NETWORK, "key": PHONE,
        "challenge": Shown(SYNC_CLIENT_CHALLENGE, "00 01 02 … 1f (32 bytes)"),
        "witness": NO_BYTES, "genesis": NO_BYTES, "open": BytesOf("open"), "count": 3,
        "max_bytes": 8 << 20, "max_entries": 20000,
    },
    "sync_proof": {
        "key": NODE, "network": NETWORK,
        "peer's challenge": Shown(SYNC_CLIENT_CHALLENGE, "the challenge of `sync_hello`"),
        "own challenge": Shown(SYNC_SERVER_CHALLENGE, "aa × 32"),
        "witness_signature": NO_BYTES,
        "over": Shown(None, "header(34), network, peer's challenge, own challenge, key"),
        "signed by": NODE,
    },
    "sync_close": {"code": Shown(3, "3 (WRONG_NETWORK)"),
                   "reason": "this side serves another network"},
    "recovery_phrase": {"seed": Shown(bytes([4]) * 32, "04 × 32, key(4) account's")},
    "key_file_box_key": {
        "passphrase": Shown("cafe\u0301", '"cafe" + U+0301 (NFC: "café", 63 61 66 c3 a9)'),
        "salt": Shown(bytes(range(16)), "00 01 … 0f (16 bytes)"),
        "opslimit": 1, "memlimit": 8192, "kind": "device",
    },
    "key_file": {
        "seed": Shown(bytes([5]) * 32, "05 × 32, key(5) phone's"),
        "box key": BytesOf("key_file_box_key"),
        "nonce": Shown(bytes(range(24)), "00 01 … 17 (24 bytes)"),
        "kind, salt, limits": Shown(None, "those of `key_file_box_key`"),
    },
}
"""Every vector's inputs by vector name, in the order of the vector block."""


def key(n: int | Key) -> SigningKey:
    """A fixed key: seed = 32 bytes of value n (or of the role's seed number)."""
    seed = n.seed if isinstance(n, Key) else n
    return SigningKey(bytes([seed]) * 32)


def pub(n: int | Key) -> bytes:
    """The public half of ``key(n)``."""
    return bytes(key(n).verify_key)


def value(x: Any) -> Any:
    """An input as the code takes it: a key's public bytes, a shown value's value."""
    if isinstance(x, Key):
        return pub(x)
    if isinstance(x, Shown):
        return x.value
    return x


def address_raw(network: bytes, account: bytes, device: bytes) -> bytes:
    """An address's 74 bytes, as the document says: network check, keys, checksum."""
    body = network[:6] + account + device
    return body + hashlib.blake2b(body, digest_size=4).digest()


def key_file_box_key(passphrase: str, salt: bytes, opslimit: int, memlimit: int,
                     kind: str) -> bytes:
    """The box key of a key file, as the document says: Argon2id, then keyed BLAKE2b."""
    stretched = argon2id.kdf(32, unicodedata.normalize("NFC", passphrase).encode("utf-8"),
                             salt, opslimit=opslimit, memlimit=memlimit)
    return hashlib.blake2b(b"tallystick-key/1/" + kind.encode("ascii"), key=stretched,
                           digest_size=32).digest()


def key_file(seed: bytes, box_key: bytes, nonce: bytes, *, kind: str, salt: bytes,
             opslimit: int, memlimit: int) -> str:
    """A key file (on one line), as the document says."""
    box = bytes(SecretBox(box_key).encrypt(seed, nonce))
    doc = {
        "format": "tallystick-key", "version": 1, "kind": kind,
        "public": key_text(bytes(SigningKey(seed).verify_key)),
        "kdf": {"name": "argon2id", "opslimit": opslimit, "memlimit": memlimit,
                "salt": base64.b64encode(salt).decode()},
        "box": base64.b64encode(box).decode(),
    }
    return json.dumps(doc)


def _block(kind: Kind, net: bytes, ids: dict[str, bytes], i: dict[str, Any], **f: Any) -> Block:
    """A block of ``kind`` from its inputs, signed by its ``signed by`` key."""
    prev = i["prev"]
    b = Block(kind, net, value(i["device"]), i["seq"],
              ids[prev.vector] if isinstance(prev, IdOf) else value(prev), **f)
    return b.signed(key(i["signed by"]))


def build() -> dict[str, str]:
    """Every vector by name, as lowercase hex (or text for URIs, ids and the key file)."""
    v = INPUTS
    g = v["genesis"]
    genesis = Genesis(
        g["name"], g["currency"], g["decimals"], pub(g["issuer"]),
        tuple(pub(w) for w in g["witnesses"]), g["quorum"],
        Policy(g["floor_payment"], g["floor_account"], g["floor_till"], g["settle_period_s"]),
    ).signed(key(g["signed by"]))
    net = genesis.network_id
    ids: dict[str, bytes] = {}

    def opened(name: str) -> Block:
        """An open signed from the device's pairing request, the way tally makes one."""
        i = v[name]
        request = make_pairing_request(net, pub(i["account"]), key(i["device"]), i["label"])
        block = sign_open(request, key(i["signed by"]))
        assert (block.device, block.seq, block.prev) == (pub(i["device"]), i["seq"], ZERO_ID)
        ids[name] = block.id
        return block

    def payment(name: str, kind: Kind) -> Block:
        i = v[name]
        block = _block(kind, net, ids, i, to_account=value(i["to_account"]),
                       to_device=value(i["to_device"]), amount=i["amount"],
                       request_id=value(i["request_id"]), memo=value(i["memo"]))
        ids[name] = block.id
        return block

    mint_open = opened("open_issuer")
    issue = payment("issue", Kind.ISSUE)
    p = v["open_payload"]
    payload = open_payload(net, pub(p["account"]), pub(p["device"]), p["label"])
    device_sig = sign_message(key(v["open_device_sig"]["signed by"]), Kind.PAIRING, payload)
    phone_open = opened("open")
    assert phone_open.device_sig == device_sig
    i = v["receive"]
    receive = _block(Kind.RECEIVE, net, ids, i, claim=ids[i["claim"].vector])
    ids["receive"] = receive.id
    send = payment("send", Kind.SEND)
    i = v["revoke"]
    revoke = _block(Kind.REVOKE, net, ids, i, account=pub(i["account"]),
                    to_account=pub(i["account"]), to_device=pub(i["sibling"]))
    i = v["vote"]
    vote = Vote(net, pub(i["device"]), i["seq"], ids[i["block"].vector],
                pub(i["witness"])).signed(key(i["signed by"]))
    a = v["address_raw"]
    raw_address = address_raw(net, pub(a["account"]), pub(a["device"]))
    address = Address.of(net, pub(a["account"]), pub(a["device"]))
    r = v["request"]
    request = PaymentRequest(net, address, r["amount"], r["id"], r["exp"], r["memo"],
                             value(r["fp"]), value(r["fa"]), value(r["ft"]))
    i = v["pairing"]
    pairing = make_pairing_request(net, pub(i["account"]), key(i["signed by"]), i["label"])
    assert pairing.device == pub(i["device"])
    client = item_client_id(issue.id)
    item = encode_items([(client, id_text(issue.id), issue.raw)])
    bundle = encode_bundle(net, [mint_open.raw, issue.raw])
    h = v["sync_hello"]
    hello = Hello(h["version"], value(h["role"]), net, pub(h["key"]), value(h["challenge"]),
                  value(h["witness"]), value(h["genesis"]), phone_open.raw, h["count"],
                  h["max_bytes"], h["max_entries"])
    s = v["sync_proof"]
    proof = Proof(sign_message(key(s["signed by"]), Kind.HELLO, proof_payload(
        net, value(s["peer's challenge"]), value(s["own challenge"]), pub(s["key"]))),
        value(s["witness_signature"]))
    c = v["sync_close"]
    close = Close(value(c["code"]), c["reason"])
    assert close.code == CloseCode.WRONG_NETWORK
    kb = v["key_file_box_key"]
    box_key = key_file_box_key(value(kb["passphrase"]), value(kb["salt"]), kb["opslimit"],
                               kb["memlimit"], kb["kind"])
    kf = v["key_file"]
    return {
        "genesis": genesis.raw.hex(),
        "network_id": id_text(net),
        "open_issuer": mint_open.raw.hex(),
        "issue": issue.raw.hex(),
        "issue_id": id_text(issue.id),
        "open_payload": payload.hex(),
        "open_device_sig": device_sig.hex(),
        "open": phone_open.raw.hex(),
        "receive": receive.raw.hex(),
        "send": send.raw.hex(),
        "revoke": revoke.raw.hex(),
        "vote": vote.raw.hex(),
        "address_raw": raw_address.hex(),
        "address": address.text(),
        "request": request.uri(),
        "pairing": pairing.to_text(),
        "yjs_client_id": str(client),
        "yjs_item": item.hex(),
        "bundle": bundle.hex(),
        "sync_hello": encode(hello).hex(),
        "sync_proof": encode(proof).hex(),
        "sync_close": encode(close).hex(),
        "recovery_phrase": phrase_from_seed(value(v["recovery_phrase"]["seed"])),
        "key_file_box_key": box_key.hex(),
        "key_file": key_file(value(kf["seed"]), box_key, value(kf["nonce"]), kind=kb["kind"],
                             salt=value(kb["salt"]), opslimit=kb["opslimit"],
                             memlimit=kb["memlimit"]),
    }


def _shown(x: Any) -> str:
    """One input as the document writes it."""
    if isinstance(x, Key | IdOf | BytesOf | Shown):
        return str(x)
    if isinstance(x, bool):
        raise TypeError("no boolean inputs")
    if isinstance(x, int):
        return str(x)
    if isinstance(x, str):
        return json.dumps(x, ensure_ascii=False)
    if isinstance(x, bytes):
        return x.hex() if x else "empty"
    if isinstance(x, tuple):
        return ", ".join(_shown(e) for e in x)
    raise TypeError(f"cannot show input {x!r}")


def inputs_table() -> str:
    """The inputs of every vector, as the Markdown table docs/protocol.md shows."""
    rows = ["| vector | inputs |", "|---|---|"]
    for name, fields in INPUTS.items():
        cell = "; ".join(f"{field}: {_shown(x)}" for field, x in fields.items())
        assert "|" not in cell, name
        rows.append(f"| `{name}` | {cell} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--inputs"]:
        print(inputs_table())
    else:
        for name, text in build().items():
            print(f"{name}: {text}")
