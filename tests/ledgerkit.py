"""Build Tallystick networks by hand in tests: keys, genesis, devices, blocks, votes.

No tests here. Typical use::

    net = Net(witnesses=1)                    # quorum 1 of 1 (N=0 gives q=0)
    alice = net.account(devices=2)            # account key + two opened devices
    led = net.ledger()                        # a Ledger holding the opens
    iss = net.issue(led, alice[0], 500)       # builds on led's tip of the mint
    led.add([iss, *net.votes(iss)])
    rc = net.receive(led, alice[0], iss)

Every builder takes ``at``: a ``Ledger`` (the block is built on the device's tip
there, the last block of its main chain), a ``Block`` to build on (a fork, a clone),
or None for the device's own last block as this kit remembers it (``Device.last``).
Keys come from ``rng`` when given, so a seeded run signs the same bytes every time.

Also: ``Net.fund`` (issue + claim, certified unless ``final=False``), ``Witness`` (an
honest witness with its claimed-slot table, voting what ``Ledger.votable`` offers),
``closure`` (what sync ships with some blocks) and ``entries`` (a Ledger's whole set).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from wallet.encoding import Block, Genesis, Kind, Policy, Vote, device_signature
from wallet.ledger import Ledger

POLICY = Policy(floor_payment=1000, floor_account=2000, floor_till=5000, settle_period_s=3600)


def pk(key: SigningKey) -> bytes:
    """The public key bytes of a signing key."""
    return bytes(key.verify_key)


def keygen(rng: random.Random | None = None) -> SigningKey:
    """A signing key, from ``rng`` when given (reproducible), else from the OS."""
    return SigningKey(rng.randbytes(32) if rng else os.urandom(32))


@dataclass(eq=False)
class Account:
    """An account key and the devices it opened."""

    key: SigningKey
    devices: list[Device] = field(default_factory=list)

    @property
    def pk(self) -> bytes:
        return pk(self.key)

    def __getitem__(self, i: int) -> Device:
        return self.devices[i]


@dataclass(eq=False)
class Device:
    """A device key, its account (the issuer's key for the mint) and its open."""

    key: SigningKey
    account_key: SigningKey
    open: Block
    label: str = ""
    last: Block | None = None  # the last block this kit signed for it

    @property
    def pk(self) -> bytes:
        return pk(self.key)

    @property
    def account(self) -> bytes:
        return pk(self.account_key)

    def __repr__(self) -> str:
        return f"Device({self.label or self.pk.hex()[:8]})"


class Net:
    """A network: issuer, witnesses, genesis, the issuing device (``mint``)."""

    def __init__(
        self,
        witnesses: int = 1,
        quorum: int | None = None,
        *,
        rng: random.Random | None = None,
        name: str = "test",
    ) -> None:
        self.rng = rng
        self.issuer = keygen(rng)
        self.witness_keys = [keygen(rng) for _ in range(witnesses)]
        if quorum is None:
            quorum = witnesses // 2 + 1 if witnesses else 0
        self.quorum = quorum
        self.genesis = Genesis(
            name, "EUR", 2, pk(self.issuer), tuple(pk(w) for w in self.witness_keys), quorum, POLICY
        ).signed(self.issuer)
        self.id = self.genesis.network_id
        self.accounts: list[Account] = []
        self.mint = self._open(self.issuer, keygen(rng), "mint")
        self.opens: list[Block] = [self.mint.open]

    # ------------------------------------------------------------ keys and opens
    def _open(self, account_key: SigningKey, device_key: SigningKey, label: str) -> Device:
        ob = self.open_block(account_key, device_key, label)
        return Device(device_key, account_key, ob, label, ob)

    def open_block(self, account_key: SigningKey, device_key: SigningKey, label: str = "") -> Block:
        """An ``open`` of ``device_key`` signed by ``account_key``, carrying the device's
        signature over (network, account, device, label)."""
        return Block(
            Kind.OPEN, self.id, pk(device_key), 0, account=pk(account_key), label=label,
            device_sig=device_signature(device_key, self.id, pk(account_key), label),
        ).signed(account_key)

    def account(self, devices: int = 1, label: str = "") -> Account:
        """A new account key with ``devices`` devices, each opened by the account."""
        acc = Account(keygen(self.rng))
        self.accounts.append(acc)
        for _ in range(devices):
            self.device(acc, label)
        return acc

    def device(self, account: Account, label: str = "") -> Device:
        """A new device opened by ``account``."""
        n = len(account.devices)
        tag = f"{label or 'acct' + str(len(self.accounts) - 1)}.{n}"
        dev = self._open(account.key, keygen(self.rng), tag)
        account.devices.append(dev)
        self.opens.append(dev.open)
        return dev

    def ledger(self, *entries: Block | Vote | Iterable[Block | Vote], opens: bool = True) -> Ledger:
        """A fresh Ledger with every open made so far (unless ``opens=False``) and entries."""
        led = Ledger(self.genesis)
        flat: list[Block | Vote] = list(self.opens) if opens else []
        for e in entries:
            flat.extend([e] if isinstance(e, Block | Vote) else e)
        led.add(flat)
        return led

    # ------------------------------------------------------------------ blocks
    def _prev(self, at: Ledger | Block | None, dev: Device) -> Block:
        if isinstance(at, Block):
            return at
        prev = dev.last if at is None else at.tip(dev.pk)
        if prev is None:
            raise ValueError(f"{dev!r} has no block to build on")
        return prev

    def _sign(self, dev: Device, block: Block) -> Block:
        out = block.signed(dev.key)
        dev.last = out
        return out

    def send(
        self,
        at: Ledger | Block | None,
        dev: Device,
        to: Device,
        amount: int,
        *,
        memo: bytes = b"",
        request_id: bytes = b"",
        kind: Kind = Kind.SEND,
    ) -> Block:
        """``dev`` pays ``amount`` to ``to`` (a move when both are one account's)."""
        p = self._prev(at, dev)
        b = Block(
            kind,
            self.id,
            dev.pk,
            p.seq + 1,
            p.id,
            to_account=to.account,
            to_device=to.pk,
            amount=amount,
            request_id=request_id,
            memo=memo,
        )
        return self._sign(dev, b)

    move = send

    def issue(self, at: Ledger | Block | None, to: Device, amount: int) -> Block:
        """The mint issues ``amount`` to ``to``."""
        return self.send(at, self.mint, to, amount, kind=Kind.ISSUE)

    def receive(self, at: Ledger | Block | None, dev: Device, claim: Block | bytes) -> Block:
        """``dev`` claims a send, issue or revoke (a block or its id)."""
        p = self._prev(at, dev)
        cid = claim.id if isinstance(claim, Block) else claim
        return self._sign(dev, Block(Kind.RECEIVE, self.id, dev.pk, p.seq + 1, p.id, claim=cid))

    def revoke(
        self,
        at: Ledger | Block | None,
        dev: Device,
        sibling: Device,
        *,
        account_key: SigningKey | None = None,
    ) -> Block:
        """The account closes ``dev``'s chain, passing its balance to ``sibling``.

        Signed by ``dev``'s account key unless ``account_key`` says otherwise (a stranger).
        """
        p = self._prev(at, dev)
        key = account_key or dev.account_key
        b = Block(
            Kind.REVOKE,
            self.id,
            dev.pk,
            p.seq + 1,
            p.id,
            account=pk(key),
            to_account=pk(key),
            to_device=sibling.pk,
        )
        return b.signed(key)  # not the device's own doing: dev.last stays

    def fund(
        self, led: Ledger, dev: Device, amount: int, *, final: bool = True
    ) -> list[Block | Vote]:
        """Issue ``amount`` to ``dev`` and claim it in ``led``; certify the issue when
        ``final`` (and q > 0). Returns the entries added."""
        iss = self.issue(led, dev, amount)
        out: list[Block | Vote] = [iss]
        if final:
            out += self.votes(iss)
        led.add(out)
        rc = self.receive(led, dev, iss)
        led.add([rc])
        return [*out, rc]

    # ------------------------------------------------------------------- votes
    def vote(self, block: Block, witness: int | SigningKey = 0) -> Vote:
        """A vote for ``block`` by witness number ``witness`` (or a given key)."""
        key = witness if isinstance(witness, SigningKey) else self.witness_keys[witness]
        return Vote(self.id, block.device, block.seq, block.id, pk(key)).signed(key)

    def votes(self, block: Block, witnesses: Iterable[int] | None = None) -> list[Vote]:
        """Votes for ``block`` by the given witnesses (default: the first ``quorum``)."""
        ws = range(self.quorum) if witnesses is None else witnesses
        return [self.vote(block, w) for w in ws]


class Witness:
    """An honest witness: votes what ``Ledger.votable`` offers, claiming slots first.

    ``claims`` is its durable claimed-slot table, (device, slot) -> block id; a vote
    leaves only when every slot it covers is free or already claimed for that branch.
    """

    def __init__(self, net: Net, index: int) -> None:
        self.net = net
        self.index = index
        self.key = net.witness_keys[index]
        self.claims: dict[tuple[bytes, int], bytes] = {}
        self.top: dict[bytes, int] = {}

    def last_voted(self, device: bytes) -> tuple[int, bytes] | None:
        top = self.top.get(device)
        return None if top is None else (top, self.claims[(device, top)])

    def vote(self, led: Ledger, device: bytes) -> Vote | None:
        """Vote the device's votable block in ``led``, or None when the rule says no."""
        b = led.votable(device, self.last_voted(device))
        if b is None:
            return None
        branch: list[Block] = []
        cur: Block | None = b
        while cur is not None and (cur.device, cur.seq) not in self.claims:
            branch.append(cur)
            cur = led.blocks.get(cur.prev) if cur.seq else None
        if cur is not None and self.claims[(cur.device, cur.seq)] != cur.id:
            return None  # a slot it covers is claimed for another block
        if cur is None and branch and branch[-1].seq != 0:
            return None  # the chain below is not in the replica
        for x in branch:
            self.claims[(x.device, x.seq)] = x.id
        self.top[device] = max(self.top.get(device, -1), b.seq)
        return self.net.vote(b, self.key)

    def vote_all(self, led: Ledger) -> list[Vote]:
        """Vote every device of ``led`` that the rule allows."""
        out = []
        for device in sorted(led.devices):
            v = self.vote(led, device)
            if v is not None:
                out.append(v)
        return out


def closure(led: Ledger, roots: Iterable[bytes]) -> list[Block | Vote]:
    """What sync ships with some blocks: their chains below, the sends (and revokes) they
    claim with their own dependencies, the revokes that route a claim, every vote for a
    block shipped, and — so that what is final stays final — every block of the replica
    that a shipped block's votes sit on, with its own dependencies."""
    todo = [r for r in roots if r in led.blocks]
    have: set[bytes] = set()
    votes_on: dict[bytes, list[Vote]] = {}
    for v in led.votes.values():
        votes_on.setdefault(v.block_id, []).append(v)
    children: dict[bytes, list[bytes]] = {}
    revokes_of: dict[bytes, list[bytes]] = {}
    for b in led.blocks.values():
        if b.seq:
            children.setdefault(b.prev, []).append(b.id)
        if b.kind == Kind.REVOKE:
            revokes_of.setdefault(b.device, []).append(b.id)
    while todo:
        bid = todo.pop()
        if bid in have or bid not in led.blocks:
            continue
        have.add(bid)
        b = led.blocks[bid]
        if b.seq:
            todo.append(b.prev)
        else:
            todo.extend(led.devices[b.device].roots)  # every open: a stranger's shows too
        if b.kind == Kind.RECEIVE and b.claim in led.blocks:
            todo.append(b.claim)
            s = led.blocks[b.claim]
            if s.to_device != b.device:
                todo.extend(revokes_of.get(s.to_device, ()))
        # votes on a block above this one make this one final: ship those blocks too
        stack = list(children.get(bid, ()))
        while stack:
            c = stack.pop()
            if c in votes_on:
                todo.append(c)
            stack.extend(children.get(c, ()))
    out: list[Block | Vote] = [led.blocks[b] for b in have]
    for bid in have:
        out.extend(votes_on.get(bid, ()))
    return out


def entries(led: Ledger) -> list[Block | Vote]:
    """Every entry a Ledger holds."""
    return [*led.blocks.values(), *led.votes.values()]
