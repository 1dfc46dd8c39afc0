"""The test vectors of docs/protocol.md, built from fixed seeds (Ed25519 is deterministic)."""

from __future__ import annotations

from nacl.signing import SigningKey

from sync.errors import CloseCode
from sync.messages import PROTOCOL_VERSION, ROLE_DEVICE, Close, Hello, Proof, encode
from sync.protocol import proof_payload
from wallet.address import Address, PaymentRequest
from wallet.bundle import encode_bundle
from wallet.crdt import encode_items, item_client_id
from wallet.encoding import Block, Genesis, Kind, Policy, Vote, id_text, sign_message
from wallet.pairing import make_open, make_pairing_request

SYNC_CLIENT_CHALLENGE = bytes(range(32))
SYNC_SERVER_CHALLENGE = bytes([0xAA]) * 32


def key(n: int) -> SigningKey:
    """A fixed key: seed = 32 bytes of value n."""
    return SigningKey(bytes([n]) * 32)


def pub(n: int) -> bytes:
    """The public half of ``key(n)``."""
    return bytes(key(n).verify_key)


def build() -> dict[str, str]:
    """Every vector by name, as lowercase hex (or text for URIs and ids)."""
    issuer, witness, mint, account, phone, shop = 1, 2, 3, 4, 5, 6
    genesis = Genesis("vector", "EUR", 2, pub(issuer), (pub(witness),), 1,
                      Policy(5000, 10000, 100000, 86400)).signed(key(issuer))
    net = genesis.network_id
    mint_open = make_open(net, key(issuer), key(mint), "mint")
    issue = Block(Kind.ISSUE, net, pub(mint), 1, mint_open.id, to_account=pub(account),
                  to_device=pub(phone), amount=10000).signed(key(mint))
    phone_open = make_open(net, key(account), key(phone), "phone")
    receive = Block(Kind.RECEIVE, net, pub(phone), 1, phone_open.id,
                    claim=issue.id).signed(key(phone))
    send = Block(Kind.SEND, net, pub(phone), 2, receive.id, to_account=pub(account),
                 to_device=pub(shop), amount=1250, request_id=bytes.fromhex("0102030405060708"),
                 memo=b"\x00" * 48 + b"sealed").signed(key(phone))
    revoke = Block(Kind.REVOKE, net, pub(phone), 3, send.id, account=pub(account),
                   to_account=pub(account), to_device=pub(shop)).signed(key(account))
    vote = Vote(net, pub(phone), 2, send.id, pub(witness)).signed(key(witness))
    request = PaymentRequest(net, Address.of(net, pub(account), pub(shop)), 1250,
                             bytes.fromhex("0102030405060708"), 1767225600, "Coffee & cake",
                             2000)
    pairing = make_pairing_request(net, pub(account), key(shop), "till 1")
    item = encode_items([(item_client_id(issue.id), id_text(issue.id), issue.raw)])
    bundle = encode_bundle(net, [mint_open.raw, issue.raw])
    # sync: the phone's hello to a node (key 7), the node's proof, a close
    node = 7
    hello = Hello(PROTOCOL_VERSION, ROLE_DEVICE, net, pub(phone), SYNC_CLIENT_CHALLENGE,
                  open=phone_open.raw, count=3)
    proof = Proof(sign_message(key(node), Kind.HELLO, proof_payload(
        net, SYNC_CLIENT_CHALLENGE, SYNC_SERVER_CHALLENGE, pub(node))))
    close = Close(CloseCode.WRONG_NETWORK, "this side serves another network")
    return {
        "genesis": genesis.raw.hex(),
        "network_id": id_text(net),
        "open_issuer": mint_open.raw.hex(),
        "issue": issue.raw.hex(),
        "issue_id": id_text(issue.id),
        "open": phone_open.raw.hex(),
        "receive": receive.raw.hex(),
        "send": send.raw.hex(),
        "revoke": revoke.raw.hex(),
        "vote": vote.raw.hex(),
        "address": Address.of(net, pub(account), pub(shop)).text(),
        "request": request.uri(),
        "pairing": pairing.to_text(),
        "yjs_item": item.hex(),
        "bundle": bundle.hex(),
        "sync_hello": encode(hello).hex(),
        "sync_proof": encode(proof).hex(),
        "sync_close": encode(close).hex(),
    }


if __name__ == "__main__":
    for name, value in build().items():
        print(f"{name}: {value}")
