"""One simulated world, from one seed: real relays (with witnesses) and real wallets over
real SQLite stores, syncing over ``sim.net`` on ``sim.loop``'s simulated time.

What runs is the shipped code: ``server.relay.Relay`` serves each connection with its
own handler, ``sync.client.SyncClient`` keeps each wallet in sync (claiming what it is
paid), ``Wallet.pay`` signs payments. The simulator only decides what happens when:
who pays whom, which process crashes and restarts from its store, which nodes are cut
off from which, and what the network does to each message (``sim.net.Faults``, drawn
per seed). After the fault phase the network heals, every node comes back, and the
world must settle: every replica's entry-set digest agrees and, with witnesses, every
payment an honest device made is final (liveness).

Invariants are checked where they are kept and after every step: the ledger asserts
DESIGN §3's after every batch (``wallet.ledger.CHECK``), and ``sim.checks`` looks at
every replica the step touched. The first violation stops the run with its seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import random
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

import wallet.ledger
import wallet.wallet
from server.network import ServedNetwork
from server.relay import Limits, Relay, RelayConfig
from server.store import SqliteRelayStore
from server.telemetry import Telemetry
from sim.hostile import SIM_MESSAGE_BYTES_MAX, Hostile
from sim.loop import SimLoop
from sim.net import Faults, SimNetwork
from sim.wire import WireWatch
from sync.client import SyncClient
from sync.listener import Listener
from sync.transport import inline
from wallet.address import Address, parse_address
from wallet.encoding import Block, Genesis, Kind, Policy, Vote, short
from wallet.errors import TallyError
from wallet.floor import Limits as FloorLimits
from wallet.keys import FAST_INSECURE
from wallet.ledger import VALID, Ledger
from wallet.wallet import Wallet

PASSPHRASE = "simulated"
ISSUED = 100_000
"""What the issuer gives each payer at the start (minor units)."""
PAY_MAX = 5_000
"""The largest payment the simulator makes (minor units)."""
SETTLE_STEPS_MAX = 20_000
"""Steps the healed world gets to agree before it counts as not live."""
QUIET_S = 120.0
"""Simulated seconds a healed world may stay silent (no message, no action) while its
replicas disagree: nothing more will come, so it is not live."""
SETTLE_S_MAX = 3_600.0
"""Simulated seconds the healed world gets to agree."""
SAMPLE_EVERY_STEPS = 500
"""How often the statuses every replica holds are noted (coverage)."""
CHECK_EVERY_STEPS = 50
"""How often the checks that read every replica run (the ledger's own run each batch)."""


class Violation(AssertionError):
    """A promise broken: what, and at which step."""


FAULT_KNOBS = ("drop", "duplicate", "reorder", "cut", "delay")
CALM_KNOBS = (*FAULT_KNOBS, "crash", "partition", "hostile", "clone", "dishonest", "revoke",
              "rates")
TIGHT_RATES = {"device_rate": 5.0, "device_burst": 20.0, "address_rate": 20.0,
               "address_burst": 60.0}
"""Rate limits (messages a second, and bursts) that a simulated wallet meets."""
"""What a run can be told to leave out (``--calm``; shrinking turns them off)."""


@dataclass
class Shape:
    """What a seed's world is made of, and the mix of what happens in it."""

    witnesses: int
    quorum: int
    payers: int
    faults: Faults
    crash_rate: float
    """Crashes (of a relay or a wallet) per simulated second."""
    partition_rate: float
    pay_rate: float
    clone: bool
    hostile: float
    """How often the hostile node tampers with a message it sends (0: no hostile node)."""
    dishonest: int = 0
    """Witnesses that vote every block they see, forks and all (at most the f that
    N = 3f + 1 tolerates)."""
    revoke_race: bool = False
    """The first payer has a second device (a phone), which its account revokes while
    the phone, unaware, pays from the same slot."""
    tills: int = 0
    """Merchant tills payers pay in person, over a peer-to-peer link."""
    tight_rates: bool = False
    """Relays whose rate limits a busy wallet meets (``TIGHT_RATES``), not the defaults."""

    def calmed(self, knobs: Iterable[str]) -> Shape:
        """This shape with some of what happens in it turned off (``CALM_KNOBS``)."""
        out = dataclasses.replace(self, faults=dataclasses.replace(self.faults))
        for knob in knobs:
            if knob in FAULT_KNOBS:
                setattr(out.faults, knob, 0.0)
            elif knob == "crash":
                out.crash_rate = 0.0
            elif knob == "partition":
                out.partition_rate = 0.0
            elif knob == "hostile":
                out.hostile = 0.0
            elif knob == "clone":
                out.clone = False
            elif knob == "dishonest":
                out.dishonest = 0
            elif knob == "revoke":
                out.revoke_race = False
            elif knob == "rates":
                out.tight_rates = False
            else:
                raise ValueError(f"no such knob {knob!r}: one of {', '.join(CALM_KNOBS)}")
        return out

    def active(self) -> list[str]:
        """The knobs on in this shape."""
        on = [k for k in FAULT_KNOBS if getattr(self.faults, k)]
        on += [k for k, v in (("crash", self.crash_rate), ("partition", self.partition_rate),
                              ("hostile", self.hostile), ("clone", self.clone),
                              ("dishonest", self.dishonest), ("revoke", self.revoke_race),
                              ("rates", self.tight_rates))
               if v]
        return on

    @classmethod
    def draw(cls, rng: random.Random) -> Shape:
        """A seed's shape: network, population and fault mix (swarm testing)."""
        witnesses, quorum = rng.choice([(0, 0), (1, 1), (3, 2), (4, 3)])
        return cls(witnesses=witnesses, quorum=quorum, payers=rng.randint(2, 5),
                   faults=Faults.draw(rng),
                   crash_rate=rng.choice([0.0, rng.uniform(0.02, 0.3)]),
                   partition_rate=rng.choice([0.0, rng.uniform(0.005, 0.05)]),
                   pay_rate=rng.uniform(0.5, 4.0), clone=rng.random() < 0.5,
                   hostile=rng.choice([0.0, rng.uniform(0.01, 0.2)]),
                   dishonest=(witnesses - 1) // 3 if rng.random() < 0.5 else 0,
                   revoke_race=rng.random() < 0.5, tills=rng.choice([0, 1, 2]),
                   tight_rates=rng.random() < 0.3)


@dataclass
class Report:
    """How a run went."""

    seed: int
    steps: int = 0
    settle_steps: int = 0
    simulated_s: float = 0.0
    payments: int = 0
    crashes: int = 0
    partitions: int = 0
    faults: int = 0
    coverage: dict[str, int] = field(default_factory=dict)
    violation: str | None = None

    def count(self, what: str, n: int = 1) -> None:
        """Note a path reached."""
        self.coverage[what] = self.coverage.get(what, 0) + n


# ------------------------------------------------------------------ determinism
@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Every source of randomness the code under test reads, seeded: the system's
    (``os.urandom``: store ids, hello challenges), key generation, and ``random``."""
    source = random.Random(seed * 7919 + 1)
    keys = random.Random(seed * 104729 + 2)
    real_urandom, real_generate = os.urandom, SigningKey.generate
    state = random.getstate()

    def generate(cls: type[SigningKey]) -> SigningKey:
        return cls(keys.randbytes(32))

    os.urandom = source.randbytes  # type: ignore[assignment]
    SigningKey.generate = classmethod(generate)  # type: ignore[method-assign,assignment]
    random.seed(seed)
    try:
        yield
    finally:
        os.urandom = real_urandom
        SigningKey.generate = real_generate  # type: ignore[method-assign]
        random.setstate(state)


EPOCH = 1_800_000_000.0
"""The Unix time a simulated world's clock starts at (a Tuesday in January 2027)."""


@contextlib.contextmanager
def wall_clock(loop: SimLoop) -> Iterator[None]:
    """``time.time`` reads the simulated clock: what the code under test stamps (when a
    till took a payment, when a taking settles, an entry's first sighting, a relay's
    quota day) follows simulated time, and replays."""
    import time

    real = time.time
    time.time = lambda: EPOCH + loop.elapsed_s  # type: ignore[assignment]
    try:
        yield
    finally:
        time.time = real  # type: ignore[assignment]


@contextlib.contextmanager
def ledger_checks() -> Iterator[None]:
    """The ledger asserts its invariants after every batch (``TALLY_CHECK=1``)."""
    was = wallet.ledger.CHECK, wallet.wallet.CHECK
    wallet.ledger.CHECK = wallet.wallet.CHECK = True
    try:
        yield
    finally:
        wallet.ledger.CHECK, wallet.wallet.CHECK = was


def watched(world: World, task: asyncio.Task[object], what: str) -> asyncio.Task[object]:
    """A task of the world's whose failure is a violation (an exception other than its
    cancellation: the code under test raised where it must not)."""
    def done(t: asyncio.Task[object]) -> None:
        if t.cancelled() or world.report.violation is not None:
            return
        exc = t.exception()
        if exc is not None and not isinstance(exc, Violation):
            world.violated(f"{what} failed: {type(exc).__name__}: {exc}")
    task.add_done_callback(done)
    return task


def on_sync_event(world: World, node: str) -> Callable[[object], None]:
    """A wallet's sync events: a ``Problem`` other than a claim that must wait (which a
    wallet whose chain is broken meets, as it should) is a failure inside."""
    from sync.client import Problem

    def on_event(e: object) -> None:
        if isinstance(e, Problem) and not e.reason.startswith("payments to this device wait"):
            with contextlib.suppress(Violation):
                world.violated(f"{node}: {e.reason}")
    return on_event


# ------------------------------------------------------------------ nodes
class RelayNode:
    """A ``tally-relay`` process: its database survives a crash, nothing else does."""

    def __init__(self, world: World, n: int, witness: SigningKey | None, *,
                 dishonest: bool = False) -> None:
        self.world = world
        self.dishonest = dishonest
        self.name = f"relay{n}"
        self.url = f"ws://{self.name}"
        self.db = world.root / f"{self.name}.db"
        self.node_key = SigningKey.generate()
        self.witness = witness
        self.relay: Relay | None = None
        self.store: SqliteRelayStore | None = None

    def start(self) -> None:
        """Start (or restart) from the database."""
        self.store = SqliteRelayStore(self.db, create=True)
        config = RelayConfig(host="sim", port=0, node_key=self.node_key,
                             genesis=[self.world.genesis], witness_key=self.witness,
                             limits=Limits(quota_per_day=None,
                                           message_bytes_max=SIM_MESSAGE_BYTES_MAX,
                                           **(TIGHT_RATES if self.world.shape.tight_rates
                                              else {})),
                             clock=self.world.loop.time)  # the real rate limits
        self.log = io.StringIO()
        self.log_read = 0
        self.relay = Relay(config, self.store, Telemetry(self.log))
        self.check_survived()
        for net in self.relay.networks.values():
            if self.dishonest:
                equivocate(net, self.world.report.count)
            net.vote_all_soon()
        self.world.net.revive(self.name)
        self.world.net.serve(self.url, self.name, self.relay.handler)

    def check_survived(self) -> None:
        """(On a start) what this relay acknowledged, and every slot its witness voted,
        is in its store: nothing promised is lost across a crash."""
        assert self.store is not None
        network = self.world.genesis.network_id
        held = self.ledgers()[0]
        lost = [i for i in self.world.watch.acked.get(self.name, ()) if i not in held]
        if lost:
            self.world.violated(f"{self.name} acknowledged {len(lost)} entries it no longer "
                                f"holds after a restart (first {short(lost[0])}…)")
        for device, slot in self.world.watch.voted.get(self.name, {}).items():
            last = self.store.last(network, device)
            if last is None or last[0] < slot:
                self.world.violated(
                    f"{self.name}'s witness voted device {short(device)}… slot {slot}, and "
                    f"after a restart its claims reach {last[0] if last else 'no slot'}")
        self.world.report.count("restart:checked")

    def crash(self) -> None:
        """The process dies: its links drop, what it had not committed is gone."""
        for line in self.errors() if self.relay is not None else []:
            self.world.violated(f"{self.name} failed inside: {line}")
        self.world.net.isolate(self.name)
        relay, store = self.relay, self.store
        self.relay = self.store = None
        if relay is not None:
            for net in relay.networks.values():
                net.cancel()
        if store is not None:
            store.abandon()

    @property
    def up(self) -> bool:
        """True while running."""
        return self.relay is not None

    def ledgers(self) -> list[Ledger]:
        """Its replica of the network (none while down)."""
        return [n.ledger for n in self.relay.networks.values()] if self.relay else []

    def errors(self) -> list[str]:
        """Internal errors it logged since the last look (a bug: a peer's input must
        never make the relay fail)."""
        text = self.log.getvalue()
        new, self.log_read = text[self.log_read:], len(text)
        return [line for line in new.splitlines() if '"event": "error"' in line]

    def digest(self) -> bytes | None:
        """Its entry-set digest (None while down)."""
        if self.relay is None:
            return None
        (net,) = self.relay.networks.values()
        return net.port.digest()


def equivocate(net: ServedNetwork, reached: Callable[[str], None]) -> None:
    """Make a relay's witness dishonest: on top of what the rule lets it vote, it votes
    every block of the devices it was about to look at, forks and all (no claim, no
    rule)."""
    witness = net.witness
    assert witness is not None
    honest_vote = net.vote_now
    led = net.ledger

    def vote_now() -> list[Vote]:
        devices = sorted(net._touched)
        votes = honest_vote()
        extra = []
        for key in devices:
            d = led.devices.get(key)
            for bid in sorted(d.block_ids) if d is not None else ():
                mine = [led.votes[v] for v in led.votes_on(bid)]
                if not any(v.witness == witness.public for v in mine):
                    b = led.blocks[bid]
                    extra.append(Vote(net.network, b.device, b.seq, b.id,
                                      witness.public).signed(witness.key))
                    st = led.status.get(bid)
                    reached("witness:dishonest_vote" if st is None or st.state == VALID
                            else "witness:voted_a_losing_side")
        if extra:
            net.add_local(extra)
        return votes + extra

    net.vote_now = vote_now  # type: ignore[method-assign]


class WalletNode:
    """A wallet app: its home survives a crash; it syncs with every relay."""

    def __init__(self, world: World, name: str, home: Path, *, honest: bool = True) -> None:
        self.world = world
        self.name = name
        self.home = home
        self.honest = honest
        self.wallet: Wallet | None = None
        self.client: SyncClient | None = None
        self.task: asyncio.Task[object] | None = None
        self.address: Address | None = None
        self.device = b""
        self.visits: dict[asyncio.Task[object], None] = {}  # one-off syncs with a till

    def start(self) -> None:
        """Open the home and sync with every relay, live."""
        w = self.wallet = Wallet.open(self.home)
        self.address = w.address()
        self.device = w.device or b""
        self.world.net.revive(self.name)
        if not self.world.relays:
            return
        self.client = SyncClient(
            w, PASSPHRASE, relays=[r.url for r in self.world.relays],
            connect=self.world.net.connector(self.name), offload=inline,
            rng=random.Random(self.world.rng.random()), backoff_base_s=0.5,
            backoff_cap_s=10.0, on_event=on_sync_event(self.world, self.name))
        self.task = watched(self.world, self.world.loop.create_task(self.client.run()),
                            f"{self.name}'s sync")

    def crash(self) -> None:
        """The app dies: its links drop; what its store committed stays."""
        self.world.net.isolate(self.name)
        if self.task is not None:
            self.task.cancel()
        for visit in list(self.visits):
            visit.cancel()
        self.task = self.client = None
        if self.wallet is not None:
            self.wallet.close()
        self.wallet = None

    @property
    def up(self) -> bool:
        """True while running."""
        return self.wallet is not None

    def ledgers(self) -> list[Ledger]:
        """Its replica (none while down)."""
        return [self.wallet.ledger] if self.wallet is not None else []

    def digest(self) -> bytes | None:
        """Its entry-set digest (None while down)."""
        # (read, not through a WalletPort, which would give the store an id: a check
        # must not change what it checks)
        return self.wallet.ledger.tables.digest() if self.wallet is not None else None

    def spendable(self) -> int:
        """What it can pay now."""
        if self.wallet is None:
            return 0
        return self.wallet.ledger.balance(self.device).spendable


class TillNode(WalletNode):
    """A merchant's till: a wallet that takes payments from payers who connect to it
    (``tally serve``: the real listener), deciding on each under its floor limits, and
    that syncs with the relays like any wallet when it can reach them."""

    LIMITS = FloorLimits(2_000, 4_000, 8_000)
    """The till's floor limits (lower than the network's), minor units."""

    def __init__(self, world: World, name: str, home: Path) -> None:
        super().__init__(world, name, home)
        self.url = f"ws://{name}"
        self.listener: Listener | None = None
        self.serving: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Open, listen for payers, and sync with the relays."""
        super().start()
        assert self.wallet is not None
        held = self.wallet.ledger
        lost = [i for i in self.world.watch.acked.get(self.name, ()) if i not in held]
        if lost:
            self.world.violated(f"{self.name} acknowledged {len(lost)} entries it no "
                                f"longer holds after a restart (first {short(lost[0])}…)")
        self.listener = Listener(self.wallet, PASSPHRASE, host="sim", port=0,
                                 offload=inline, rng=random.Random(self.world.rng.random()),
                                 on_event=on_sync_event(self.world, self.name))
        self.world.net.serve(self.url, self.name, self.listener.serve_one)
        self.serving = watched(self.world, self.world.loop.create_task(self._serve()),
                               f"{self.name}'s listener")

    async def _serve(self) -> None:
        assert self.listener is not None
        with self.listener.pushing_on_commits():
            self.listener.claim_soon()  # what came in while it was down
            await self.listener.stopping.wait()

    def crash(self) -> None:
        """The till dies: it stops listening; its home stays."""
        if self.serving is not None:
            self.serving.cancel()
        self.serving = self.listener = None
        super().crash()


# ------------------------------------------------------------------ the world
class World:
    """One seed's world (see the module docstring)."""

    def __init__(self, seed: int, root: Path, *, trace: Callable[[str], None] | None = None,
                 calm: Iterable[str] = ()) -> None:
        self.seed = seed
        self.root = root
        self.rng = random.Random(seed)
        self.shape = Shape.draw(self.rng).calmed(calm)
        self.loop = SimLoop()
        self.report = Report(seed)
        self.trace = trace
        self.watch = WireWatch({}, self.report.count)
        self.net = SimNetwork(self.loop, self.rng, self._stepped, self.watch)
        self.relays: list[RelayNode] = []
        self.wallets: list[WalletNode] = []
        self.issuer: WalletNode | None = None
        self.genesis: Genesis
        self.steps_goal = 0
        self.settling = False
        self._settled = asyncio.Event()
        self._made: dict[bytes, str] = {}  # payments signed: id → payer's node
        self._cloned: set[bytes] = set()  # devices whose key was copied
        self.phone: WalletNode | None = None  # the revoke race's device
        self.tills: list[TillNode] = []
        self._raced = False
        self._last_step_s = 0.0

    # ---------------------------------------------------------- building
    def build(self) -> None:
        """The network, its relays and witnesses, the issuer and the payers, funded."""
        sh = self.shape
        witness_keys = [SigningKey.generate() for _ in range(sh.witnesses)]
        issuer_key = SigningKey.generate()
        self.genesis = Genesis(
            f"sim{self.seed}", "EUR", 2, bytes(issuer_key.verify_key),
            tuple(bytes(k.verify_key) for k in witness_keys), sh.quorum,
            Policy(5_000, 10_000, 100_000, 3_600)).signed(issuer_key)
        for n in range(max(1, sh.witnesses)):
            node = RelayNode(self, n, witness_keys[n] if witness_keys else None,
                             dishonest=n < sh.dishonest)
            self.relays.append(node)
            if node.witness is not None:
                self.watch.witnesses[node.name] = bytes(node.witness.verify_key)
            if node.dishonest:
                self.watch.dishonest.add(node.name)
        Wallet.create_network(self.root / "issuer", self.genesis, issuer_key, PASSPHRASE,
                              limits=FAST_INSECURE).close()
        self.issuer = WalletNode(self, "issuer", self.root / "issuer")
        for n in range(sh.payers):
            home = self.root / f"payer{n}"
            w = Wallet.join(home, self.genesis.raw)
            w.init(PASSPHRASE, label=f"payer{n}", limits=FAST_INSECURE)
            w.close()
            self.wallets.append(WalletNode(self, f"payer{n}", home))
        for n in range(sh.tills):
            home = self.root / f"till{n}"
            w = Wallet.join(home, self.genesis.raw)
            w.init(PASSPHRASE, label=f"till{n}", limits=FAST_INSECURE)
            w.set_till_limits(TillNode.LIMITS)
            w.close()
            till = TillNode(self, f"till{n}", home)
            self.tills.append(till)
            self.wallets.append(till)
        if sh.revoke_race:
            self._pair_phone(self.wallets[0])
        if sh.hostile:
            home = self.root / "mallory"
            w = Wallet.join(home, self.genesis.raw)
            w.init(PASSPHRASE, label="mallory", limits=FAST_INSECURE)
            w.close()
            self.wallets.append(WalletNode(self, "mallory", home))
            self.net.hostile["mallory"] = Hostile(sh.hostile)
        iw = Wallet.open(self.root / "issuer")
        try:
            for node in self.wallets:
                w = Wallet.open(node.home)
                try:
                    iw.pay(w.address(), ISSUED, PASSPHRASE)
                finally:
                    w.close()
        finally:
            iw.close()

    def _pair_phone(self, holder: WalletNode) -> None:
        """A second device of ``holder``'s account, paired and opened (at setup)."""
        home = self.root / f"{holder.name}-phone"
        phone = Wallet.join(home, self.genesis.raw)
        w = Wallet.open(holder.home)
        try:
            request = phone.pair_request(PASSPHRASE, parse_address(w.address().text()),
                                         label="phone", limits=FAST_INSECURE)
            w.pair_add(request, PASSPHRASE)
            phone.ingest_bodies(w.bodies(w.export_ids(None)))
        finally:
            w.close()
            phone.close()
        self.phone = WalletNode(self, f"{holder.name}-phone", home)
        self.wallets.append(self.phone)

    def _revoke_race(self) -> None:
        """The phone pays, unaware that its account is revoking it at the same time."""
        phone, holder = self.phone, self.wallets[0]
        assert phone is not None
        if not (phone.up and holder.up and phone.spendable() > 0):
            return
        self._raced = True
        phone.honest = False  # what it pays now may lose to the revoke, as it should
        to = self.rng.choice([w for w in self.wallets if w is not phone and w.address])
        assert phone.wallet is not None and holder.wallet is not None and to.address
        try:
            phone.wallet.pay(to.address, self.rng.randint(1, phone.spendable()), PASSPHRASE)
            holder.wallet.revoke(phone.device, holder.device, PASSPHRASE)
        except TallyError as exc:
            self.say(f"the revoke race did not start: {exc}")
            return
        self.report.count("revoke_race")
        self.say(f"{phone.name} pays while {holder.name} revokes it")

    # ---------------------------------------------------------- running
    def _stepped(self, kind: str, node: str = "") -> None:
        """One step: a message landed at ``node`` (or an action happened)."""
        if self.report.violation is not None:
            return  # the run is ending
        self.report.steps += 1
        self._last_step_s = self.loop.elapsed_s
        self.report.count(f"net:{kind}")
        if self.settling:
            self.report.settle_steps += 1
        elif self.report.steps >= self.steps_goal:
            self.loop.call_soon(self._heal_all)
        if self.watch.broken:
            self.violated(self.watch.broken[0])
        if node:
            self.loop.call_soon(self._check_node, node)  # once the message is handled
        if self.report.steps % CHECK_EVERY_STEPS == 0:
            self.check()
        if self.report.steps % SAMPLE_EVERY_STEPS == 0:
            self.sample_statuses()

    def say(self, what: str) -> None:
        """A line of the trace."""
        if self.trace is not None:
            self.trace(f"{self.report.steps:>7} {self.loop.elapsed_s:9.3f}s {what}")

    def violated(self, what: str) -> None:
        """Stop the run: a promise is broken. (Raised in a callback of the loop's, the
        exception goes nowhere: the run ends because ``run`` is woken.)"""
        if self.report.violation is None:
            self.report.violation = f"step {self.report.steps}: {what}"
            self.say(f"VIOLATION {what}")
        self._settled.set()
        raise Violation(self.report.violation)

    def nodes(self) -> list[RelayNode | WalletNode]:
        """Every node, relays first."""
        out: list[RelayNode | WalletNode] = [*self.relays]
        if self.issuer is not None:
            out.append(self.issuer)
        return out + self.wallets

    async def run(self, steps: int) -> Report:
        """The fault phase for ``steps`` steps, then healing until the world settles."""
        self.steps_goal = steps
        self.net.faults = self.shape.faults
        for r in self.relays:
            r.start()
        assert self.issuer is not None
        self.issuer.start()
        for w in self.wallets:
            w.start()
        driver = self.loop.create_task(self._drive())
        try:
            await self._settled.wait()
        finally:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Violation):
                await driver
        self.report.simulated_s = self.loop.elapsed_s
        return self.report

    async def _drive(self) -> None:
        """What happens in the world, one action at a time, until it settles."""
        sh, rng = self.shape, self.rng
        while not self.settling:
            total = sh.pay_rate + sh.crash_rate + sh.partition_rate
            await asyncio.sleep(rng.expovariate(total))
            if self.settling:
                break
            pick = rng.uniform(0, total)
            if pick < sh.pay_rate:
                self._pay()
            elif pick < sh.pay_rate + sh.crash_rate:
                self._crash_or_restart()
            else:
                self._partition_or_heal()
            self._stepped("action")
        await self._settle()

    def _overspend(self, node: WalletNode) -> None:
        """The hostile node signs a send its chain cannot fund: every replica must hold
        it invalid (``overspend``), and nothing it paid before changes."""
        w = node.wallet
        assert w is not None and w.device is not None
        others = [n for n in self.wallets if n.address is not None and n is not node]
        to = self.rng.choice(others).address
        assert to is not None
        amount = node.spendable() + ISSUED
        try:
            w._sign(PASSPHRASE, lambda seq, prev: Block(
                Kind.SEND, self.genesis.network_id, w.device or b"", seq, prev,
                to_account=to.account, to_device=to.device, amount=amount))
        except TallyError as exc:
            self.say(f"{node.name} cannot sign an overspend: {exc}")
            return
        node.honest = False
        self.report.count("overspend")
        self.say(f"{node.name} signs an overspend of {amount}")

    def _pay(self) -> None:
        if self.phone is not None and not self._raced and self.rng.random() < 0.05:
            self._revoke_race()
            return
        hostile = [w for w in self.wallets if w.up and w.name in self.net.hostile]
        if hostile and self.rng.random() < 0.02:
            self._overspend(hostile[0])
            return
        if self.tills and self.rng.random() < 0.3:
            self._pay_at_till()
            return
        payers = [w for w in self.wallets if w.up and w.spendable() > 0]
        if not payers:
            return
        src = self.rng.choice(payers)
        others = [w for w in self.wallets if w.device != src.device and w.address is not None]
        dst = self.rng.choice(others)
        assert src.wallet is not None and dst.address is not None
        amount = self.rng.randint(1, min(PAY_MAX, src.spendable()))
        try:
            block, _ = src.wallet.pay(dst.address, amount, PASSPHRASE)
        except TallyError as exc:  # a wallet that saw its own fork refuses to sign
            self.report.count("pay:refused")
            self.say(f"{src.name} cannot pay: {exc}")
            return
        self._made[block.id] = src.name
        self.report.payments += 1
        self.report.count("pay")
        self.say(f"{src.name} pays {dst.name} {amount}")
        if self.shape.clone and not self._cloned and self.rng.random() < 0.05:
            self._clone(src)

    def _pay_at_till(self) -> None:
        """A payer at a till: it pays, then syncs with the till directly (``tally sync
        --peer URL --once``), whether or not either can reach a relay."""
        till = self.rng.choice(self.tills)
        payers = [w for w in self.wallets if w.up and w.spendable() > 0
                  and not isinstance(w, TillNode)]
        if not payers or till.address is None:
            return
        src = self.rng.choice(payers)
        assert src.wallet is not None
        amount = self.rng.randint(1, min(PAY_MAX, src.spendable()))
        try:
            block, _ = src.wallet.pay(till.address, amount, PASSPHRASE)
        except TallyError as exc:
            self.say(f"{src.name} cannot pay {till.name}: {exc}")
            return
        self._made[block.id] = src.name
        self.report.payments += 1
        self.report.count("pay:till")
        self.say(f"{src.name} pays {till.name} {amount} in person")
        client = SyncClient(src.wallet, PASSPHRASE, peers=[till.url], once=True,
                            connect=self.net.connector(src.name), offload=inline,
                            rng=random.Random(self.rng.random()),
                            on_event=on_sync_event(self, src.name))
        task = watched(self, self.loop.create_task(client.run()), f"{src.name}'s visit")
        src.visits[task] = None
        task.add_done_callback(lambda t: src.visits.pop(t, None))

    def _clone(self, src: WalletNode) -> None:
        """``src``'s disk is copied: the copy signs with the same device key."""
        assert src.wallet is not None
        home = self.root / f"{src.name}-clone"
        shutil.copytree(src.home, home)
        clone = WalletNode(self, f"{src.name}-clone", home, honest=False)
        src.honest = False
        self._cloned.add(src.device)
        self.wallets.append(clone)
        clone.start()
        self.report.count("clone")
        self.say(f"{src.name}'s disk is cloned")

    def _crash_or_restart(self) -> None:
        # relays half the time: a relay's crash tests more promises than a wallet's
        node = self.rng.choice(self.relays if self.rng.random() < 0.5 else self.nodes())
        if node.up:
            node.crash()
            self.report.crashes += 1
            self.report.count(f"crash:{type(node).__name__}")
            self.say(f"{node.name} crashes")
        else:
            node.start()
            self.report.count("restart")
            self.say(f"{node.name} restarts")

    def _partition_or_heal(self) -> None:
        if self.net.apart:
            self.net.heal()
            self.say("the partition heals")
            return
        names = [n.name for n in self.nodes()]
        self.rng.shuffle(names)
        cut = self.rng.randint(1, len(names) - 1)
        self.net.partition(set(names[:cut]), set(names[cut:]))
        self.report.partitions += 1
        self.report.count("partition")
        self.say(f"partition: {sorted(names[:cut])} | {sorted(names[cut:])}")

    def _heal_all(self) -> None:
        if self.settling:
            return
        self.settling = True
        self.net.faults = Faults()
        self.net.hostile.clear()
        self.net.heal()
        for link in list(self.net.links):  # every conversation starts afresh, and
            self.net.cut(link, "healing")  # one a hostile peer garbled ends here
        for node in self.nodes():
            if not node.up:
                node.start()
        self.say("healed: no more faults, every node up")

    async def _settle(self) -> None:
        """Wait for agreement (liveness), within the bounds."""
        start_steps, start_s = self.report.settle_steps, self.loop.elapsed_s
        while True:
            await asyncio.sleep(1.0)
            self.check()  # (a quiet world takes no steps: its checks run here)
            if self._agreed():
                break
            quiet = self.loop.elapsed_s - self._last_step_s > QUIET_S
            if (self.report.settle_steps - start_steps > SETTLE_STEPS_MAX
                    or self.loop.elapsed_s - start_s > SETTLE_S_MAX or quiet):
                self.violated("not live: after healing, the replicas did not agree "
                              + (f"and nothing moved for {QUIET_S:g} s" if quiet else
                                 f"within {SETTLE_STEPS_MAX} steps or {SETTLE_S_MAX:g} s")
                              + f" ({self._disagreement()})")
        self.check(final=True)
        self._settled.set()

    # ---------------------------------------------------------- checks
    def _agreed(self) -> bool:
        digests = {n.digest() for n in self.nodes()}
        if len(digests) != 1:
            return False
        if self.genesis.quorum == 0:
            return True
        led = self.relays[0].ledgers()[0]
        for bid, payer in self._made.items():
            node = next(w for w in self.wallets if w.name == payer)
            if not node.honest:
                continue
            st = led.status.get(bid)
            if st is None or not (st.state == VALID and st.final):
                return False
        return True

    def _disagreement(self) -> str:
        digests: dict[bytes | None, list[str]] = {}
        for n in self.nodes():
            digests.setdefault(n.digest(), []).append(n.name)
        return f"{len(digests)} different entry sets: " + "; ".join(
            ", ".join(names) for names in digests.values())

    def _check_node(self, name: str) -> None:
        """After a step: the promises of the replica it reached."""
        from sim.checks import check_replica

        if self.report.violation is not None:
            return
        for node in self.nodes():
            if node.name == name:
                for led in node.ledgers():
                    problem = check_replica(name, led)
                    if problem is not None:
                        self.violated(problem)

    def sample_statuses(self) -> None:
        """Note (as coverage) every status the replicas hold now."""
        labels: set[str] = set()
        for node in self.nodes():
            for led in node.ledgers():
                for bid in led.status:
                    st = led.status[bid]
                    labels.add(f"status:{st.label}" + (f":{st.reason}" if st.reason else ""))
        for label in labels:
            self.report.count(label)

    def check(self, *, final: bool = False) -> None:
        """The promises that read every replica (see ``sim.checks``)."""
        from sim.checks import check_world

        if self.watch.broken:
            self.violated(self.watch.broken[0])
        for r in self.relays:
            if r.up:
                for line in r.errors():
                    self.violated(f"{r.name} failed inside: {line}")
        for problem in self.loop.unhandled:
            if "Violation" not in problem:
                self.violated(f"an exception nobody handled: {problem}")
        problem = check_world(self, final=final)
        if problem is not None:
            self.violated(problem)


def is_payment(b: Block) -> bool:
    """A send or an issue."""
    return b.kind in (Kind.SEND, Kind.ISSUE)
