"""The wallet service: one wallet, its unlocked keys and its events, under every face.

The ``tally`` command line and the terminal app are thin faces over this: it owns the
``Wallet``, the keys it unlocked once with the passphrase (``wallet.unlocked``; locked
again after the idle time the person set), the operations whose rules are the same in
every face (what a ``tally:`` request asks, which device a label names), and one stream
of events built from what the wallet commits: a block's status changing, a payment
arriving for one of the account's devices, a fork seen (a fraud proof).

Threads: the faces read through ``wallet`` on their own thread; everything that signs,
stores or syncs runs on the service's one wallet thread over a second connection to
the same home (``sync_forever`` runs the sync client there too), and the reading side
takes in what it committed with ``Wallet.refresh``. It imports ``wallet/`` and
``sync/``, and nothing of the faces.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from wallet import keys as keyfiles
from wallet.address import (
    ADDRESS_PREFIXES,
    Address,
    PaymentRequest,
    parse_address,
    parse_request,
)
from wallet.amounts import format_amount, parse_amount
from wallet.encoding import Block, Kind, id_text, key_text, parse_entry, short, short_id
from wallet.errors import WalletError
from wallet.floor import Limits
from wallet.ledger import (
    ACCEPTED_WORD,
    CONFLICTED,
    VALID,
    Balance,
    FraudProof,
    Status,
    StatusChange,
)
from wallet.settings import Settings
from wallet.store import HistoryRow
from wallet.takings import Taking
from wallet.unlocked import UnlockedKeys
from wallet.wallet import Wallet, check_memo, local_minute, short_minute

if TYPE_CHECKING:  # the sync client (websockets) is loaded only by what syncs
    from sync.client import SyncClient, SyncEvent

REQUEST_ID_BYTES = 8
"""A new request's random id (what a till matches its takings by)."""
REQUEST_ID_BYTES_MAX = 32
"""The longest request id a request may carry."""
T = TypeVar("T")

FROM_SETTINGS = "settings"
"""``idle_lock_s`` read from the wallet's saved settings."""
HISTORY_PAGE_ROWS = 500
"""Rows read from the store at a time when a whole filtered history is exported."""


@dataclass(frozen=True)
class Payee:
    """Whom a payment goes to, how much, and the request it answers (if any)."""

    address: Address
    amount: int
    request: PaymentRequest | None


@dataclass(frozen=True)
class StatusChanged:
    """A block's status changed (``old`` is None for a block new here)."""

    change: StatusChange


@dataclass(frozen=True)
class PaymentArrived:
    """A send, issue or revoke addressed to one of this account's devices, new here."""

    block: Block
    status: Status


@dataclass(frozen=True)
class PaymentFinal:
    """A payment to one of this account's devices, from outside it, turned final."""

    block: Block


@dataclass(frozen=True)
class ForkSeen:
    """A block of a device turned conflicted: a fraud proof is held for that device."""

    device: bytes
    seq: int
    block_id: bytes


@dataclass(frozen=True)
class RequestMade:
    """This wallet made a payment request (a payer may now pay it)."""

    request: PaymentRequest


@dataclass(frozen=True)
class HistoryFilter:
    """Which rows of the history a person asked for: a status word or group
    (``wallet.store.STATUS_FILTERS``), block kinds, and a counterparty (a label, the
    start of a device key, or an address) whose payments to or from the account
    are kept."""

    status: str | None = None
    kinds: tuple[Kind, ...] = ()
    counterparty: str = ""


ServiceEvent = StatusChanged | PaymentArrived | PaymentFinal | ForkSeen | RequestMade
"""What the service tells its listeners of the wallet's commits and requests; while it
syncs (``sync_forever``) the sync client's events (``sync.client.SyncEvent``) come in
the same stream."""

_PAYMENTS = (Kind.SEND, Kind.ISSUE, Kind.REVOKE)


def passphrase_in_env() -> bool:
    """True when ``TALLY_PASSPHRASE`` or ``TALLY_PASSPHRASE_FILE`` is set (the keys can
    be unlocked without asking anyone)."""
    return bool(os.environ.get(keyfiles.PASSPHRASE_ENV)
                or os.environ.get(keyfiles.PASSPHRASE_FILE_ENV))


def join_network(home: Path, genesis_file: Path | str) -> Wallet:
    """A new wallet home at ``home`` on the network a genesis file names (what first
    run does before an account exists)."""
    path = Path(str(genesis_file).strip()).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WalletError(f"cannot read the genesis file {path}: {exc.strerror}") from exc
    return Wallet.join(Path(home), raw)


def new_recovery_phrase() -> str:
    """The recovery phrase of a new account key (nothing is stored until the person has
    written it down and ``create_account`` is called with it)."""
    return keyfiles.phrase_from_seed(os.urandom(32))


class WalletService:
    """One wallet home, opened once: unlocked keys, operations and events."""

    def __init__(self, wallet: Wallet, *, idle_lock_s: float | str | None = FROM_SETTINGS,
                 passphrase: Callable[[], str] = keyfiles.passphrase_from_env,
                 keys: UnlockedKeys | None = None) -> None:
        """``wallet`` is read on the caller's thread; what signs, stores or syncs runs
        on the service's one wallet thread, over a second connection to the same home
        (SQLite lets it write while the first reads). ``passphrase`` is asked when a
        signing finds the keys locked (by default ``TALLY_PASSPHRASE``,
        ``TALLY_PASSPHRASE_FILE`` or a prompt). The keys are locked after
        ``idle_lock_s`` idle seconds: by default what the person saved in Settings."""
        self.wallet = wallet
        if idle_lock_s == FROM_SETTINGS:
            idle_lock_s = wallet.settings().idle_lock_s
        assert not isinstance(idle_lock_s, str), idle_lock_s
        self.keys = keys or UnlockedKeys(idle_lock_s)
        self._passphrase = passphrase
        self._listeners: list[Callable[[ServiceEvent | SyncEvent], None]] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wallet")
        self._writer: Wallet | None = None
        wallet.subscribe(lambda changes: self._on_commit(wallet, changes))

    @classmethod
    def open(cls, home: Path | str, **kw: object) -> WalletService:
        """The service over the wallet at ``home``."""
        return cls(Wallet.open(Path(home)), **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        """Lock the keys, stop the wallet thread and close the wallet."""
        self.keys.lock()
        if self._writer is not None:
            self._pool.submit(self._writer.close).result()
        self._pool.shutdown(wait=True)
        self.wallet.close()

    def _on_wallet_thread(self, fn: Callable[[Wallet], T]) -> T:
        """``fn(writer)`` on the wallet thread; its result (or what it raised)."""
        return self._pool.submit(lambda: fn(self._open_writer())).result()

    def _open_writer(self) -> Wallet:
        """(On the wallet thread) the writing connection, opened on first use."""
        if self._writer is None:
            w = Wallet.open(self.wallet.home)
            w.unlocked = self.keys
            w.subscribe(lambda changes: self._on_commit(w, changes))
            self._writer = w
        return self._writer

    # ------------------------------------------------------------------ keys
    @property
    def locked(self) -> bool:
        """True when the next signing will ask for the passphrase."""
        return self.keys.locked

    def unlock(self, passphrase: str | None = None,
               kinds: tuple[str, ...] = Wallet.KEY_KINDS) -> list[str]:
        """Decrypt the home's keys once (with ``passphrase``, or the one asked for);
        the kinds now held. A wrong passphrase raises and leaves the keys locked."""
        phrase = self._passphrase() if passphrase is None else passphrase
        return self._on_wallet_thread(lambda w: w.unlock(phrase, self.keys, kinds))

    def lock(self) -> None:
        """Drop the unlocked keys now."""
        self.keys.lock()

    def _signing(self, kind: str = "device") -> str:
        """Make sure the key of that kind is held (each decryption costs an Argon2id
        run: a one-shot command unlocks only what it signs with); what to pass where a
        passphrase is asked."""
        if self.keys.get(kind) is None:
            self.unlock(kinds=(kind,))
        return ""  # held keys need no passphrase (``Wallet.load_key``)

    # ------------------------------------------------------------ operations
    def payee(self, to: str, amount: str | None = None) -> Payee:
        """Read what a person typed as the payee: an address (with ``amount``) or a
        ``tally:`` request (its amount, unless ``amount`` says the same)."""
        w = self.wallet
        text = to.strip()
        if text.startswith("tally:"):
            req = parse_request(text)
            if req.network != w.network:
                raise WalletError(
                    f"that payment request is for another network ({short_id(req.network)}…"
                    f"); this wallet is on {w.genesis.name} ({short_id(w.network)}…)")
            minor = self.amount(amount) if amount else req.amount
            if amount and minor != req.amount:
                raise WalletError(f"the request asks for {self.money(req.amount)}, not "
                                  f"{self.money(minor)}")
            return Payee(req.address, minor, req)
        address = w.resolve_address(text)
        if not amount:
            raise WalletError("give an AMOUNT, like 12.50 (or pay a tally: request)")
        return Payee(address, self.amount(amount), None)

    def amount(self, text: str) -> int:
        """An amount typed in the network's currency, in minor units."""
        return parse_amount(text, self.wallet.genesis.decimals)

    def amount_text(self, minor: int) -> str:
        """Minor units as an amount is typed (``12.50``)."""
        return format_amount(minor, self.wallet.genesis.decimals)

    def money(self, minor: int) -> str:
        """Minor units as the network's currency reads them (``12.50 EUR``)."""
        g = self.wallet.genesis
        return f"{format_amount(minor, g.decimals)} {g.currency}"

    def hold_warning(self, payee: Payee) -> str | None:
        """When the payee's till will hold this payment rather than take it offline
        (over its floor per payment, from the request or else the network's policy),
        what to tell the payer before signing; else None. (The till's exposure to this
        account and in all is not known here.)"""
        req = payee.request
        floor = (req.floor_payment if req is not None and req.floor_payment
                 else self.wallet.genesis.policy.floor_payment)
        if payee.amount <= floor:
            return None
        return (f"the till will hold this payment until it is final: "
                f"{self.money(payee.amount)} is over its floor per payment "
                f"{self.money(floor)}")

    def pay(self, payee: Payee, *, memo: str | None = None,
            again: bool = False) -> tuple[Block, Status]:
        """Sign the payment (with the unlocked keys); its block and status."""
        req = payee.request
        text = memo if memo is not None else (req.memo if req else "")
        phrase = self._signing()
        return self._on_wallet_thread(lambda w: w.pay(
            payee.address, payee.amount, phrase, memo=text, request=req, again=again))

    def device(self, text: str) -> bytes:
        """The device of this account that ``text`` names: an address, a label, or the
        start of its key."""
        w = self.wallet
        if text.strip().lower().startswith(ADDRESS_PREFIXES):
            address = parse_address(text)
            w.check_address(address)
            hits = [address.device] if address.account == w.account else []
        else:
            hits = w.match_devices(text, w.account) if w.account else []
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise WalletError(f"no device of this account matches {text!r} "
                              "(`tally devices list`)")
        raise WalletError(f"{text!r} matches {len(hits)} devices; give more of the key")

    def move(self, amount: str, to_device: bytes) -> tuple[Block, Status]:
        """Move money from this device to another of this account (its escrow)."""
        w = self.wallet
        if w.account is None:
            raise WalletError("this wallet has no account yet")
        if to_device == w.device:
            raise WalletError("that is this device: move to another one of the account")
        minor = self.amount(amount)
        phrase = self._signing()
        to = Address.of(w.network, w.account, to_device)
        return self._on_wallet_thread(lambda wt: wt.pay(to, minor, phrase))

    def sweep(self, to_device: bytes | None = None) -> tuple[Block, Status] | None:
        """Move this till's spendable (final) money to another device of the account:
        ``to_device``, or the only other one; None when there is nothing to move."""
        w = self.wallet
        if to_device is None:
            others = [k for k, _, _, mine in self.devices() if not mine]
            if len(others) != 1:
                raise WalletError(
                    "say which device takes the takings: --to DEVICE (this account has "
                    f"{len(others)} other devices)" if others else
                    "this account has no other device to sweep to")
            to_device = others[0]
        assert w.device is not None
        minor = w.ledger.balance(w.device).spendable
        if minor <= 0:
            return None
        return self.move(self.amount_text(minor), to_device)

    def receive(self) -> list[tuple[Block, Status]]:
        """Claim every payment addressed to this device."""
        phrase = self._signing()
        return self._on_wallet_thread(lambda w: w.receive(phrase))

    def create_account(self, phrase: str, passphrase: str, label: str = "main") -> Address:
        """Make this wallet's account from a phrase the person confirmed
        (``new_recovery_phrase``) and its first device; keys sealed with ``passphrase``
        and held unlocked. Restoring an account is the same call with the old phrase:
        either way the device is new (never an old device's key)."""
        def start(w: Wallet) -> Address:
            w.restore(phrase, passphrase, label=label, limits=keyfiles.kdf_limits())
            w.unlock(passphrase, self.keys, Wallet.KEY_KINDS)
            return w.address()

        address = self._on_wallet_thread(start)
        self.wallet.refresh()
        return address

    def pair_request(self, account_address: str, passphrase: str,
                     label: str = "device") -> str:
        """Make this device's key and its request to join the account of a device at
        ``account_address`` (the key holder adds it in its Devices)."""
        account = parse_address(account_address.strip())
        return self._on_wallet_thread(lambda w: w.pair_request(
            passphrase, account, label=label, limits=keyfiles.kdf_limits()))

    def add_device(self, request_text: str) -> Block:
        """Sign the open of a new device of this account from its pairing request (on
        the account key's holder)."""
        phrase = self._signing("account")
        return self._on_wallet_thread(lambda w: w.pair_add(request_text.strip(), phrase))

    def revoke(self, device: bytes, to_device: bytes | None = None) -> tuple[Block, Status]:
        """Close a device's chain with the account key, passing its balance to
        ``to_device`` (by default this device)."""
        to = to_device if to_device is not None else self.wallet.device
        if to is None:
            raise WalletError("this wallet has no device to take the balance")
        phrase = self._signing("account")
        return self._on_wallet_thread(lambda w: w.revoke(device, to, phrase))

    def sibling_to_ask(self, minor: int) -> tuple[bytes, str, int] | None:
        """When this device cannot pay ``minor`` but a sibling device could move it the
        shortfall: (that device, its label, the shortfall); else None."""
        this = self.wallet.device
        if this is None:
            return None
        have = self.wallet.ledger.balance(this).spendable
        short_by = minor - have
        if short_by <= 0:
            return None
        best = max(((bal.spendable, key, label) for key, label, bal, mine in self.devices()
                    if not mine), default=None)
        if best is None or best[0] < short_by:
            return None
        return best[1], best[2], short_by

    def refund(self, payment_id: bytes, amount: str | None) -> tuple[Block, Status]:
        """Send back all (``None``: what is left) or part of a taking to its payer."""
        minor = self.amount(amount) if amount else None
        phrase = self._signing()
        done = self._on_wallet_thread(lambda w: w.refund(payment_id, minor, phrase))
        self.wallet.refresh()
        return done

    def refundable(self, payment_id: bytes) -> int:
        """What is left to refund of a taking (minor units)."""
        w = self.wallet
        found = w.takings.rows(ids=[payment_id])
        return found[0].amount - w.takings.refunded(payment_id) if found else 0

    def write_off(self, payment_id: bytes) -> Taking:
        """Take a refused taking out of this till's exposure."""
        def do(w: Wallet) -> Taking:
            with w.store.transaction():
                return w.takings.write_off(payment_id)

        taking = self._on_wallet_thread(do)
        self.wallet.refresh()
        return taking

    # -------------------------------------------------------------- settings
    def settings(self) -> Settings:
        """What the person saved for this wallet (idle lock time, theme)."""
        return self.wallet.settings()

    def save_settings(self, settings: Settings) -> None:
        """Keep these settings in the wallet home; the idle lock time applies now."""
        self._on_wallet_thread(lambda w: w.save_settings(settings))
        self.keys.idle_lock_s = settings.idle_lock_s

    def add_link(self, url: str, kind: str = "relay") -> dict[str, str]:
        """Remember a relay or peer (``kind``) to sync with; all remembered."""
        from sync.client import check_url

        checked = check_url(url.strip())
        return self._on_wallet_thread(lambda w: w.remember_links({checked: kind}))

    def remove_link(self, url: str) -> None:
        """Forget a remembered relay or peer."""
        self._on_wallet_thread(lambda w: w.forget_link(url))

    # ------------------------------------------------------------------ sync
    async def sync_forever(self, on_event: Callable[[SyncEvent], None] | None = None,
                           links: dict[str, str] | None = None) -> None:
        """Sync with the wallet's relays and peers (or ``links``: URL → ``relay`` or
        ``peer``) until cancelled, on the caller's event loop; the wallet work runs on
        the wallet thread. Each sync event (connection state, progress, in sync, down)
        goes, on that loop, to the service's listeners (the one stream of events) and
        to ``on_event``."""
        links = self.wallet.links() if links is None else links
        if not links:
            return
        phrase = self._signing()
        import asyncio

        from sync.client import SyncClient

        loop = asyncio.get_running_loop()

        def deliver(e: SyncEvent) -> None:
            for listener in list(self._listeners):
                listener(e)
            if on_event is not None:
                on_event(e)

        def make() -> SyncClient:
            return SyncClient(self._open_writer(), phrase,
                              relays=[u for u, k in links.items() if k == "relay"],
                              peers=[u for u, k in links.items() if k != "relay"],
                              on_event=deliver, pool=self._pool)

        client = await loop.run_in_executor(self._pool, make)
        try:
            await client.run()
        finally:
            client.stop()

    def amount_problem(self, text: str) -> str | None:
        """What is wrong with an amount as it is typed (format, decimals, this
        device's escrow), or None when it can be paid."""
        text = text.strip()
        if not text:
            return "an amount, like 12.50"
        try:
            minor = self.amount(text)
        except WalletError as exc:
            return str(exc)
        return self.spend_problem(minor)

    def spend_problem(self, minor: int) -> str | None:
        """Why this device cannot pay ``minor`` units now, or None."""
        if minor <= 0:
            return "more than zero"
        device = self.wallet.device
        if device is not None and self.wallet.genesis.issuer != self.wallet.account:
            have = self.wallet.ledger.balance(device).spendable
            if minor > have:
                return (f"this device can spend {self.money(have)}: move money to it from "
                        "a sibling device first")
        return None

    def devices(self) -> list[tuple[bytes, str, Balance, bool]]:
        """This account's devices: key, label, balance, whether it is this one."""
        this = self.wallet.device
        rows = [(k, label, bal, k == this) for k, label, bal in self.wallet.devices()]
        if this is not None and all(not r[3] for r in rows):
            rows.append((this, "this device", self.wallet.ledger.balance(this), True))
        return rows

    def account_balance(self) -> Balance:
        """The sum over this account's devices."""
        return self.total(self.devices())

    @staticmethod
    def total(rows: list[tuple[bytes, str, Balance, bool]]) -> Balance:
        """The sum of the balances of ``devices()`` rows already read."""
        total = Balance(0, 0)
        for _, _, bal, _ in rows:
            total = total + bal
        return total

    def request(self, amount: str, *, memo: str = "", expires: int = 0,
                request_id: bytes | None = None) -> PaymentRequest:
        """A payment request to this device: the ``tally:`` URI a payer pays."""
        w = self.wallet
        rid = os.urandom(REQUEST_ID_BYTES) if request_id is None else request_id
        if len(rid) > REQUEST_ID_BYTES_MAX:
            raise WalletError(f"request id is {len(rid)} bytes; at most "
                              f"{REQUEST_ID_BYTES_MAX}")
        check_memo(memo)
        till, net = w.till_limits(), Limits.of(w.genesis.policy)
        req = PaymentRequest(  # the till's floors, where lower than the network's
            w.network, w.address(), self.amount(amount), rid, expires, memo,
            floor_payment=till.payment if till.payment < net.payment else 0,
            floor_account=till.account if till.account < net.account else 0,
            floor_till=till.till if till.till < net.till else 0)
        made = int(time.time())
        self._on_wallet_thread(lambda wt: wt.takings.remember_request(
            rid, req.amount, memo, expires, made))
        for listener in list(self._listeners):
            listener(RequestMade(req))
        return req

    @staticmethod
    def qr_text(uri: str) -> str:
        """A QR code of ``uri`` drawn with block characters (two rows a line)."""
        import io

        import segno

        drawing = io.StringIO()
        segno.make(uri, error="m").terminal(out=drawing, compact=True)
        return drawing.getvalue()

    def history(self, *, before: int | None = None, limit: int = 50,
                status: str | None = None,
                where: HistoryFilter | None = None) -> list[HistoryRow]:
        """A page of the account's history, newest first (``Wallet.history``), of the
        rows ``where`` keeps (or of one ``status``)."""
        f = where or HistoryFilter(status=status)
        peers = self.counterparties(f.counterparty) if f.counterparty.strip() else None
        if peers == []:
            return []  # nobody answers to that name: no row can match
        return self.wallet.history(limit=limit, before=before, status=f.status,
                                   kinds=f.kinds, peers=peers)

    def counterparties(self, text: str) -> list[bytes]:
        """The devices ``text`` may name as a counterparty: an address's device, or
        every device whose label is ``text`` or whose key starts with it."""
        t = text.strip()
        if t.lower().startswith(ADDRESS_PREFIXES):
            return [parse_address(t).device]
        return self.wallet.match_counterparties(t)

    def counterparty_address(self, r: HistoryRow) -> Address | None:
        """The address of a history row's other party: the payee a send or issue
        names, or the device a payment came from (when its open is here)."""
        w = self.wallet
        if not r.incoming and r.kind in (Kind.SEND, Kind.ISSUE) and r.body:
            b = parse_entry(r.body, verify=False)
            if isinstance(b, Block) and b.to_account and b.to_device:
                return Address.of(w.network, b.to_account, b.to_device)
        device = r.device if r.incoming else r.peer
        account = w.ledger.devices.account_of(device) if device is not None else None
        return Address.of(w.network, account, device) if account and device else None

    def export_history_csv(self, path: Path, where: HistoryFilter,
                           progress: Callable[[int], None] | None = None) -> int:
        """Write every row ``where`` keeps to ``path`` as CSV (a page at a time, newest
        first); the number of rows written. ``progress(rows)`` after each page."""
        import csv

        g = self.wallet.genesis
        written = 0
        tmp = Path(path).with_name(Path(path).name + ".part")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["time", "kind", "direction", "amount", "amount_minor", "currency",
                          "device", "seq", "counterparty", "status", "reason", "credit",
                          "memo", "id"])
            before = None
            while True:
                page = self.history(before=before, limit=HISTORY_PAGE_ROWS, where=where)
                for r in page:
                    peer = r.device if r.incoming else r.peer
                    out.writerow([
                        local_minute(r.seen), r.kind.name.lower(),
                        "in" if r.incoming else "out" if r.kind in _PAYMENTS else "",
                        "" if r.amount is None else self.amount_text(r.amount),
                        "" if r.amount is None else r.amount, g.currency,
                        key_text(r.device), r.seq, key_text(peer) if peer else "",
                        r.status, r.reason, r.credit, r.memo or "", id_text(r.id)])
                written += len(page)
                if progress is not None:
                    progress(written)
                if len(page) < HISTORY_PAGE_ROWS:
                    break
                before = page[-1].ref
        os.replace(tmp, path)  # a reader never sees half a file
        return written

    def detail(self, r: HistoryRow) -> str:
        """Everything about one history row a person may ask: ids, parties, status,
        the witnesses whose votes cover it, and the fraud proof of a refused or disputed
        payment."""
        led = self.wallet.ledger
        g = self.wallet.genesis
        lines = [f"[b]{self.history_line(r)}[/b]",
                 f"seen      {local_minute(r.seen)}",
                 f"id        {id_text(r.id)}",
                 f"device    {key_text(r.device)}  (block {r.seq})"]
        peer = r.device if r.incoming else r.peer
        if peer is not None:
            lines.append(f"{'from' if r.incoming else 'to':<9} {key_text(peer)}")
        if r.amount is not None:
            lines.append(f"amount    {self.money(r.amount)}")
        if r.memo:
            lines.append(f"memo      {r.memo}")
        lines.append(f"status    {r.status}" + (f" ({r.reason})" if r.reason else ""))
        if r.credit:
            lines.append(f"credit    {self.credit_word(r)} (the claimed payment's status)")
        if g.quorum:
            cover = led.cover.get(r.id, 0) or 0
            voters = [w for w, bit in led.witness_bit.items() if cover & bit]
            lines.append(f"votes     {len(voters)} of {len(g.witnesses)} witnesses cover it "
                         f"({g.quorum} make it final)")
            lines += [f"          witness {short(w)}…" for w in voters]
        else:
            lines.append("votes     none: this network has no witnesses")
        proofs = [p for p in self.frauds() if p.device == r.device and p.seq <= r.seq]
        for p in proofs:
            lines.append("fraud     " + self.explain(p))
            lines += [f"          block {id_text(i)}" for i in p.block_ids]
        return "\n".join(lines)

    def history_line(self, r: HistoryRow) -> str:
        """One history row as a line that fits 80 columns: when, what, how much, with
        whom, and its status; for a receive that holds, where its money stands (the
        claimed payment's status: final, incoming, refused)."""
        kind = "payment" if r.incoming else r.kind.name.lower()
        amount = self.money(r.amount) if r.amount is not None else ""
        status = r.status
        if r.incoming:
            what = f"+{amount} from {short(r.device)}…"
        elif r.kind in (Kind.SEND, Kind.ISSUE) and r.peer is not None:
            what = f"-{amount} to {short(r.peer)}…"
        elif r.kind == Kind.RECEIVE and r.peer is not None and amount and r.credit:
            what = f"+{amount} from {short(r.peer)}…"
            if r.state == VALID:
                status = self.credit_word(r)
        elif r.kind == Kind.RECEIVE and r.peer is not None:
            what = f"claims a payment from {short(r.peer)}…"
        else:
            what = ""
        return f"{short_minute(r.seen)}  {kind:<8} {what:<30} {status}"

    @staticmethod
    def credit_word(r: HistoryRow) -> str:
        """A receive's credit as the status words read it."""
        return ACCEPTED_WORD if r.credit == "accepted" else r.credit

    def frauds(self) -> list[FraudProof]:
        """The fraud proofs held."""
        return self.wallet.frauds()

    def explain(self, p: FraudProof) -> str:
        """A fraud proof in words a person reads."""
        mine = p.device in {k for k, _, _, _ in self.devices()}
        whose = "one of this account's devices" if mine else "a device"
        n = len(p.block_ids)
        if p.equivocation:
            return (f"Witnesses certified {n} different blocks of {whose} "
                    f"({short(p.device)}…) at slot {p.seq}: some witness voted both "
                    "sides. Both sides are refused from that slot on.")
        outcome = ("the certified side wins; the other is lost" if self.wallet.genesis.quorum
                   else "with no witnesses, both sides are refused")
        return (f"{whose.capitalize()} ({short(p.device)}…) signed {n} different blocks at "
                f"slot {p.seq}: its key was copied or abused. Until a side is certified "
                f"its money is locked; {outcome}.")

    # ---------------------------------------------------------------- events
    def subscribe(self, listener: Callable[[ServiceEvent | SyncEvent], None]) -> None:
        """Call ``listener`` with every event, in order: after each commit (on the
        thread that committed: the wallet thread for what the service signs or syncs),
        and each sync event (on the loop that syncs)."""
        self._listeners.append(listener)

    def _on_commit(self, wallet: Wallet, changes: list[StatusChange]) -> None:
        """(On the thread that committed, with the wallet that did)."""
        if not self._listeners:
            return
        led = wallet.ledger
        mine = {k for k, _, _ in wallet.devices()} | (
            {wallet.device} if wallet.device else set())
        events: list[ServiceEvent] = []
        for ch in changes:
            events.append(StatusChanged(ch))
            # arriving final already is said by PaymentArrived; this is the later turn
            turned_final = (ch.old is not None and not ch.old.shown_final
                            and ch.new.shown_final)
            if ch.kind in _PAYMENTS and (ch.old is None or turned_final):
                b = led.blocks.get(ch.block_id)
                if b is not None and b.to_device in mine and b.device not in mine:
                    if ch.old is None:
                        events.append(PaymentArrived(b, ch.new))
                    if turned_final:
                        events.append(PaymentFinal(b))
            if ch.new.state == CONFLICTED and (ch.old is None
                                               or ch.old.state != CONFLICTED):
                events.append(ForkSeen(ch.device, ch.seq, ch.block_id))
        for listener in list(self._listeners):
            for e in events:
                listener(e)

    def _value(self, b: Block) -> int:
        """What a payment carries (a revoke: the balance it passes)."""
        return self.wallet.ledger.revoke_value(b.id) if b.kind == Kind.REVOKE else b.amount

    def describe(self, e: ServiceEvent) -> str:
        """One line a person reads for an event (notifications, logs)."""
        if isinstance(e, PaymentArrived):
            return (f"{self.money(self._value(e.block))} arrived from "
                    f"{short(e.block.device)}…: {e.status.label}")
        if isinstance(e, PaymentFinal):
            return f"{self.money(self._value(e.block))} from {short(e.block.device)}… is final"
        if isinstance(e, ForkSeen):
            return (f"device {short(e.device)}… signed two blocks at slot {e.seq}: a fraud "
                    "proof is held (see Frauds)")
        ch = e.change
        return f"block {short(ch.block_id)}… is now {ch.new.label}"
