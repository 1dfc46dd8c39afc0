"""``parse_entry``'s fast path agrees with the careful parser on every byte string.

The fast path handles well-formed entries and hands everything else to the careful
path, so it must never accept what the careful path refuses, and must build the same
entry (fields, types, bytes and id) for what both accept.
"""

from __future__ import annotations

import random

import pytest
from nacl.public import SealedBox
from nacl.signing import SigningKey

import wallet.encoding as enc
from wallet.encoding import Block, Kind, Vote, device_signature, parse_entry
from wallet.errors import EncodingError
from wallet.wallet import verify_bodies


def _careful(data: bytes, *, verify: bool = False) -> enc.Entry:
    saved = enc._parse_fast
    enc._parse_fast = lambda _data: None
    try:
        return parse_entry(data, verify=verify)
    finally:
        enc._parse_fast = saved


def _same(a: enc.Entry, b: enc.Entry) -> bool:
    return (
        type(a) is type(b)
        and a == b
        and a.raw == b.raw
        and a.id == b.id
        and all(type(getattr(a, f)) is type(getattr(b, f)) for f in a.__slots__)
    )


def _samples(rng: random.Random) -> list[bytes]:
    def key() -> SigningKey:
        return SigningKey(rng.randbytes(32))

    acc, dev, other, wit = key(), key(), key(), key()
    n = rng.randbytes(32)
    d, o = bytes(dev.verify_key), bytes(other.verify_key)
    a = bytes(acc.verify_key)
    memo = SealedBox(other.verify_key.to_curve25519_public_key()).encrypt(b"hi")
    blocks = [
        Block(Kind.OPEN, n, d, 0, account=a, label="phone",
              device_sig=device_signature(dev, n, a, "phone")),
        Block(Kind.OPEN, n, d, 0, account=a, label="", device_sig=device_signature(dev, n, a, "")),
        Block(Kind.OPEN, n, d, 0, account=a, label="é" * 32,
              device_sig=device_signature(dev, n, a, "é" * 32)),
        Block(Kind.SEND, n, d, 1, rng.randbytes(32), to_account=a, to_device=o, amount=5),
        Block(Kind.SEND, n, d, 7, rng.randbytes(32), to_account=a, to_device=o,
              amount=2**63 - 1, request_id=rng.randbytes(32), memo=memo),
        Block(Kind.ISSUE, n, d, 2, rng.randbytes(32), to_account=a, to_device=o, amount=1,
              request_id=b"r", memo=b"m" * 512),
        Block(Kind.RECEIVE, n, d, 3, rng.randbytes(32), claim=rng.randbytes(32)),
        Block(Kind.REVOKE, n, d, 4, rng.randbytes(32), account=a, to_account=a, to_device=o),
    ]
    signers = {Kind.OPEN: acc, Kind.REVOKE: acc}
    out = [b.signed(signers.get(b.kind, dev)).raw for b in blocks]
    out.append(Vote(n, d, 3, rng.randbytes(32), bytes(wit.verify_key)).signed(wit).raw)
    return out


def _check(data: bytes) -> bool:
    fast = enc._parse_fast(data)
    try:
        careful = _careful(data)
    except EncodingError:
        assert fast is None, data.hex()
        return False
    if fast is not None:
        assert _same(fast, careful), data.hex()
    return True


def test_fast_path_builds_what_the_careful_path_builds() -> None:
    for raw in _samples(random.Random(1)):
        fast = enc._parse_fast(raw)
        assert fast is not None and _same(fast, _careful(raw, verify=True))
        assert _same(parse_entry(raw), fast)


def test_fast_path_never_accepts_what_the_careful_path_refuses() -> None:
    rng = random.Random(2)
    accepted = refused = 0
    structural = [0, 1, 2, 3, 68, 75, 76, 107, 108, 140, 141, 172, 179, 180, 181, 182, 183]
    for raw in _samples(rng):
        for _ in range(400):
            x = bytearray(raw)
            op = rng.random()
            if op < 0.5:
                i = rng.choice(structural) if rng.random() < 0.7 else rng.randrange(len(x))
                x[i % len(x)] = rng.choice([0, 1, 2, 3, 4, 5, 16, 32, 64, 255, rng.randrange(256)])
            elif op < 0.7:
                del x[rng.randrange(len(x)) :]
            elif op < 0.85:
                x += bytes(rng.randrange(1, 40))
            else:
                i = rng.randrange(len(x))
                x[i:i] = bytes(rng.randrange(1, 20))
            if _check(bytes(x)):
                accepted += 1
            else:
                refused += 1
        for seq in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
            x = bytearray(raw)
            x[68:76] = seq.to_bytes(8, "big")
            _check(bytes(x))
        x = bytearray(raw)
        x[76:108] = bytes(32)
        _check(bytes(x))
        if raw[3] in (Kind.SEND, Kind.ISSUE):
            for amount in (0, 1, 2**63 - 1, 2**63):
                x = bytearray(raw)
                x[172:180] = amount.to_bytes(8, "big")
                _check(bytes(x))
        if raw[3] in (Kind.SEND, Kind.ISSUE, Kind.REVOKE):
            x = bytearray(raw)
            x[140:172] = x[36:68]  # pays (or passes its balance to) itself
            _check(bytes(x))
        if raw[3] == Kind.OPEN:  # a label one byte over its limit, lengths consistent
            x = bytearray(raw[:-64])
            x[140] = enc.LABEL_BYTES_MAX + 1
            x[141:] = b"a" * (enc.LABEL_BYTES_MAX + 1)
            _check(bytes(x) + raw[-64:])
        if raw[3] in (Kind.SEND, Kind.ISSUE):  # request id and memo one byte over
            body = raw[:-64]
            rlen = body[180]
            head, memo = body[: 181 + rlen], body[183 + rlen :]
            big = bytes([enc.REQUEST_ID_BYTES_MAX + 1]) + b"r" * (enc.REQUEST_ID_BYTES_MAX + 1)
            _check(head[:180] + big + body[181 + rlen :] + raw[-64:])
            over = enc.MEMO_BYTES_MAX + 1
            _check(head + over.to_bytes(2, "big") + b"m" * over + raw[-64:])
            _check(head + len(memo).to_bytes(2, "big") + memo + raw[-64:])
        for k in (0, 1, 2, 3, 4, 5, 6, 16, 17, 32, 33, 34):
            x = bytearray(raw)
            x[3] = k
            _check(bytes(x))
    assert accepted and refused


def test_bad_signature_is_refused_on_both_paths() -> None:
    raw = _samples(random.Random(3))[3]
    bad = raw[:-1] + bytes([raw[-1] ^ 1])
    for parse in (parse_entry, lambda d: _careful(d, verify=True)):
        with pytest.raises(EncodingError, match="bad signature"):
            parse(bad)


def test_verify_bodies_names_the_first_bad_entry_by_position() -> None:
    good = _samples(random.Random(4))
    bodies = (good * 300)[:2500]  # enough to verify on several threads
    assert len(verify_bodies(bodies)) == len(bodies)

    def flip(b: bytes) -> bytes:
        return b[:-1] + bytes([b[-1] ^ 1])

    for marks, want in [
        ({1800: flip, 2100: flip}, "entry #1800: bad signature"),
        ({90: lambda b: b[:10], 40: flip}, "entry #40: bad signature"),
        ({40: lambda b: b[:10], 90: flip}, "entry #40: truncated"),
    ]:
        batch = list(bodies)
        for i, f in marks.items():
            batch[i] = f(batch[i])
        with pytest.raises(EncodingError, match=want):
            verify_bodies(batch)
