"""A wallet home: one network, this device's keys, the store and the ledger derived from it.

This is the public API the command line, the terminal app, sync and the tests use; none
of them touch the store's tables. Every operation that changes something validates it in
the ledger first and commits the entries, the status changes and the balances in one
transaction; a refused operation changes nothing.

Home layout::

    HOME/wallet.db          the store: entries, derived statuses and balances, and this
                            wallet's keys, encrypted (Argon2id + SecretBox key records
                            ``key.device``, ``key.account`` on the device that holds the
                            account key, ``key.issuer`` on the wallet that created the
                            network), committed with the device's open so that a crash
                            never leaves a key without its device or the reverse
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import SealedBox
from nacl.signing import SigningKey

from wallet import keys as keyfiles
from wallet.address import (
    ADDRESS_PREFIXES,
    BASE32_CHARS,
    Address,
    PaymentRequest,
    parse_address,
)
from wallet.amounts import format_amount
from wallet.closure import closure
from wallet.encoding import (
    Block,
    Entry,
    Genesis,
    Kind,
    Vote,
    entry_hash,
    id_text,
    key_text,
    parse_entry,
    parse_genesis,
    short,
    short_id,
    signature_problem,
)
from wallet.errors import EncodingError, TallyError, WalletError
from wallet.export_cache import ExportCache
from wallet.floor import Limits
from wallet.ledger import (
    CHECK,
    PENDING,
    VALID,
    Balance,
    FraudProof,
    Ledger,
    Status,
    StatusChange,
)
from wallet.pairing import (
    PairingRequest,
    make_open,
    make_pairing_request,
    parse_pairing_request,
    sign_open,
)
from wallet.settings import SETTINGS_META, Settings
from wallet.store import HistoryRow, Store
from wallet.takings import DISPUTED, REFUSED, Takings, copy_differences
from wallet.unlocked import UnlockedKeys
from wallet.verify_pool import PROCESS_CHECK_MIN, Checks, first_bad

DB_NAME = "wallet.db"
SHORT_MATCH_MIN = 4
"""The fewest characters of a device key that name a device (``tally`` shows 8)."""
LINKS_META = "links"
"""The meta record of the relays and peers ``tally sync`` uses when given none."""
LINK_KINDS = frozenset({"relay", "peer"})
PAIRING_META = "pairing.request"
"""The meta record that keeps this device's pairing request, to print it again."""
TILL_LIMITS_META = "till.limits"
"""The lower floor limits a merchant set on this till (JSON, minor units)."""
RESTORED_META = "restored"
"""When this device was made by a restore (Unix time)."""
LOCK_NAME = "wallet.lock"
PARALLEL_VERIFY_MIN = 2000


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What merging a batch of entries did."""

    received: int
    new: int
    changes: list[StatusChange]
    entries: tuple[Entry, ...] = ()  # the new ones


def local_minute(unix: int) -> str:
    """A Unix time as people read it: local time, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix))


def short_minute(unix: int) -> str:
    """A Unix time in a narrow column: local month, day and minute (``12-08 14:05``)."""
    return time.strftime("%m-%d %H:%M", time.localtime(unix))


def _seen_key(req: PairingRequest) -> str:
    """The meta record that remembers a pairing request was added here."""
    return "paired." + id_text(entry_hash(req.to_text().encode()))


def verify_threads(count: int, threads: int | None = None) -> int:
    """How many threads ``verify_bodies`` and ``ingest_bodies`` use for ``count`` entries."""
    if count < PARALLEL_VERIFY_MIN:
        return 1
    return max(1, threads or os.cpu_count() or 1)


def verify_bodies(bodies: list[bytes], *, threads: int | None = None) -> list[Entry]:
    """Parse and signature-check entries, on every core for big batches.

    PyNaCl releases the GIL while it verifies, so threads run verifications in parallel.
    Raises EncodingError naming the first bad entry (by position).
    """
    return _checked(bodies, threads=threads)


def _checked(
    bodies: list[bytes], *, threads: int | None = None, held: Ledger | None = None
) -> list[Entry]:
    """Parse entries, then check their signatures, on every core for big batches.

    With ``held``, entries it already holds (and repeats within the batch) are left out
    unchecked: what a wallet holds was verified when it came in. Raises EncodingError
    naming the first bad entry by its position in ``bodies``.
    """
    parsed = _parsed(bodies, held=held)
    parsed.check(threads)
    return parsed.entries


@dataclass
class _Parsed:
    """Entries parsed (not yet signature-checked) and where each stood in the batch."""

    entries: list[Entry]
    where: list[int]
    malformed: EncodingError | None

    def check(self, threads: int | None = None) -> None:
        """Check every signature (on every core for a big batch); EncodingError names
        the first bad entry, a bad signature before a malformed entry first."""
        entries = self.entries
        bad = _first_bad_signature(entries, verify_threads(len(entries), threads))
        if bad is not None:
            raise EncodingError(f"entry #{self.where[bad]}",
                                signature_problem(entries[bad]) or "")
        if self.malformed is not None:
            raise self.malformed


def _parsed(bodies: list[bytes], *, held: Ledger | None = None) -> _Parsed:
    """Parse entries up to the first malformed one (pure Python, in this thread),
    leaving out what ``held`` holds and repeats within the batch."""
    entries: list[Entry] = []
    where: list[int] = []
    malformed: EncodingError | None = None
    seen: set[bytes] = set()
    for i, body in enumerate(bodies):
        try:
            e = parse_entry(body, verify=False)
        except EncodingError as exc:
            malformed = EncodingError(f"entry #{i}", exc.reason)
            break
        if held is not None:
            if e.id in seen:
                continue
            seen.add(e.id)
        entries.append(e)
        where.append(i)
    if held is not None and entries:
        have = held.held(seen)
        if have:
            keep = [n for n, e in enumerate(entries) if e.id not in have]
            entries = [entries[n] for n in keep]
            where = [where[n] for n in keep]
    return _Parsed(entries, where, malformed)


def _first_bad_signature(entries: list[Entry], threads: int) -> int | None:
    """The position of the first entry whose signature fails, or None."""

    def run(span: range) -> int | None:
        return first_bad(entries, span.start, span.stop)

    n = len(entries)
    if threads <= 1:
        return run(range(n))
    chunk = max(256, n // (threads * 8))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verify")
    try:
        for bad in pool.map(run, [range(i, min(i + chunk, n)) for i in range(0, n, chunk)]):
            if bad is not None:
                return bad  # spans come back in order: this is the first bad entry
        return None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _gc_paused(bulk: bool) -> Iterator[None]:
    """Pause the cyclic garbage collector while a bulk merge builds its objects.

    A merge of many entries allocates hundreds of thousands of objects that all stay
    alive, so every collection in between is wasted work that grows with the ledger.
    """
    was = gc.isenabled()
    if bulk and was:
        gc.disable()
    try:
        yield
    finally:
        if bulk and was:
            gc.enable()


class Wallet:
    """One wallet home. Open with ``Wallet.open(home)``; create with the class methods."""

    def __init__(self, home: Path, store: Store, genesis: Genesis) -> None:
        self.home = home
        self.store = store
        self.genesis = genesis
        self.network = genesis.network_id
        self._ledger: Ledger | None = None
        self._exports: ExportCache | None = None
        self._takings: Takings | None = None
        self._listeners: list[Callable[[list[StatusChange]], None]] = []
        self._lock_depth = 0
        self._synced: int | None = None  # the store's data_version the caches reflect
        self.unlocked: UnlockedKeys | None = None  # keys held by a long-running face

    # ------------------------------------------------------------- opening
    @staticmethod
    def exists(home: Path) -> bool:
        """True when ``home`` holds a wallet."""
        return (Path(home) / DB_NAME).exists()

    @classmethod
    def open(cls, home: Path) -> Wallet:
        """Open an existing wallet home; say what to run when there is none."""
        home = Path(home)
        if not cls.exists(home):
            raise WalletError(
                f"no wallet in {home}: run `tally network create` or `tally network join FILE`"
            )
        store = Store(home / DB_NAME)
        raw = store.get_meta("genesis")
        if raw is None:
            raise WalletError(f"{home / DB_NAME} has no network: it is damaged")
        return cls(home, store, parse_genesis(raw))

    @classmethod
    def _create(cls, home: Path, genesis: Genesis) -> Wallet:
        home = Path(home)
        if cls.exists(home):
            raise WalletError(f"{home} already holds a wallet; use another --home")
        if not home.exists():
            home.mkdir(parents=True)
            os.chmod(home, 0o700)
        store = Store(home / DB_NAME)
        store.set_meta("genesis", genesis.raw)
        return cls(home, store, genesis)

    @classmethod
    def join(cls, home: Path, genesis_bytes: bytes) -> Wallet:
        """A wallet home for the network that this genesis record names."""
        return cls._create(home, parse_genesis(genesis_bytes))

    @classmethod
    def create_network(
        cls,
        home: Path,
        genesis: Genesis,
        issuer_key: SigningKey,
        passphrase: str,
        *,
        label: str = "issuer",
        limits: keyfiles.KdfLimits = keyfiles.INTERACTIVE,
    ) -> Wallet:
        """A new network's issuer wallet: issuer key, issuing device and its open."""
        w = cls._create(home, genesis)
        w._start_device(issuer_key, passphrase, label, limits, account_kind="issuer")
        return w

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    # ---------------------------------------------------------------- keys
    def _key_record(
        self, kind: str, key: SigningKey, passphrase: str, limits: keyfiles.KdfLimits
    ) -> dict[str, bytes | str]:
        """A meta record holding an encrypted key, to commit with what needs it."""
        if self.has_key(kind):
            raise WalletError(f"this wallet already holds a {kind} key")
        return {f"key.{kind}": keyfiles.encrypt_secret(bytes(key), passphrase, kind=kind,
                                                        limits=limits)}

    def has_key(self, kind: str) -> bool:
        """True when this home holds a key of this kind."""
        return self.store.get_meta(f"key.{kind}") is not None

    KEY_KINDS = ("device", "account", "witness")

    def unlock(self, passphrase: str, keys: UnlockedKeys,
               kinds: tuple[str, ...] = KEY_KINDS) -> list[str]:
        """Decrypt the keys of these kinds this home holds into ``keys`` and sign with
        them from now on (``load_key`` asks for no passphrase while they are held). The
        kinds held; a wrong passphrase raises and holds nothing."""
        got = {kind: self._decrypt_key(kind, passphrase)
               for kind in kinds if self.has_key(kind)}
        if not got:
            raise WalletError("this wallet holds no key yet: run `tally init`")
        for kind, key in got.items():
            keys.put(kind, key)
        self.unlocked = keys
        return list(got)

    def load_key(self, kind: str, passphrase: str) -> SigningKey:
        """One of this home's keys: held, when unlocked (``unlock``), else decrypted
        with the passphrase."""
        held = self.unlocked.get(kind) if self.unlocked is not None else None
        if held is not None:
            return held
        key = self._decrypt_key(kind, passphrase)
        if self.unlocked is not None:
            self.unlocked.put(kind, key)
        return key

    def _decrypt_key(self, kind: str, passphrase: str) -> SigningKey:
        data = self.store.get_meta(f"key.{kind}")
        if data is None:
            raise WalletError(f"this wallet holds no {kind} key")
        got, key = keyfiles.decrypt_secret(data, passphrase, source=f"the {kind} key")
        if got != kind:
            raise WalletError(f"the {kind} key record holds a {got} key: the wallet is damaged")
        return key

    def export_key(self, kind: str, path: Path) -> None:
        """Write one of this home's keys, still encrypted, to a key file (a backup)."""
        data = self.store.get_meta(f"key.{kind}")
        if data is None:
            raise WalletError(f"this wallet holds no {kind} key")
        keyfiles.write_key_file(Path(path), data, replace=True)

    @property
    def device(self) -> bytes | None:
        """This device's public key, once it has one."""
        return self.store.get_meta("device")

    @property
    def account(self) -> bytes | None:
        """This device's account key, once its open is known."""
        return self.store.get_meta("account")

    def address(self) -> Address:
        """This device's address (account + device)."""
        if self.device is None:
            raise WalletError("this wallet has no device yet: run `tally init`")
        if self.account is None:
            raise WalletError(
                "this device waits for its open: the account key's holder runs "
                "`tally devices add REQUEST`, then bring its bundle here"
            )
        return Address.of(self.network, self.account, self.device)

    def _start_device(
        self,
        account_key: SigningKey,
        passphrase: str,
        label: str,
        limits: keyfiles.KdfLimits,
        *,
        account_kind: str = "account",
    ) -> tuple[bytes, IngestReport]:
        if self.device is not None:
            raise WalletError("this wallet already has a device")
        device_key = SigningKey.generate()
        # Keys, the device's identity and its open commit in one transaction: a crash
        # leaves either a wallet with a device or one where `init` can run again.
        meta = self._key_record(account_kind, account_key, passphrase, limits)
        meta |= self._key_record("device", device_key, passphrase, limits)
        meta |= {"device": bytes(device_key.verify_key), "account": bytes(account_key.verify_key)}
        open_block = make_open(self.network, account_key, device_key, label)
        with self._writing():
            return open_block.device, self._ingest([open_block], meta=meta)

    def init(
        self, passphrase: str, *, label: str = "main",
        limits: keyfiles.KdfLimits = keyfiles.INTERACTIVE,
    ) -> str:
        """A new account and this device; returns the account's recovery phrase."""
        account_key = SigningKey.generate()
        self._start_device(account_key, passphrase, label, limits)
        return keyfiles.phrase_from_seed(bytes(account_key))

    def restore(
        self, phrase: str, passphrase: str, *, label: str = "restored",
        limits: keyfiles.KdfLimits = keyfiles.INTERACTIVE,
    ) -> bytes:
        """Rebuild the account key from its phrase and make a new device under it."""
        account_key = SigningKey(keyfiles.seed_from_phrase(phrase))
        device, _ = self._start_device(account_key, passphrase, label, limits)
        self.store.set_meta(RESTORED_META, str(int(time.time())))
        return device

    @property
    def restored(self) -> bool:
        """True when this device was made by restoring the account from its phrase (its
        owner may have lost devices to revoke)."""
        return self.store.get_meta(RESTORED_META) is not None

    def live_siblings(self) -> list[tuple[bytes, str]]:
        """This account's other devices whose chain no revoke has closed."""
        led = self.ledger
        out = []
        for key, label, _ in self.devices():
            head = led.head(key)
            if key != self.device and not (head is not None and head.kind == Kind.REVOKE):
                out.append((key, label))
        return out

    def pair_request(self, passphrase: str, account: Address, *, label: str = "device",
                     limits: keyfiles.KdfLimits = keyfiles.INTERACTIVE) -> str:
        """Make this device's key and return its request to join ``account``.

        ``account`` is the address of a device of the account to join (the key holder's).
        A request made before is returned again (it was lost? print it once more); a
        device asks to join one account only.
        """
        if not account.belongs_to(self.network):
            raise WalletError(
                f"that address is of network {account.network_text()}…, this wallet is on "
                f"{self.genesis.name} ({short_id(self.network)}…): ask for an address made "
                "on this network")
        stored = self.store.get_meta(PAIRING_META)
        if self.device is not None:
            if stored is None:
                raise WalletError("this wallet already has a device of its own account")
            req = parse_pairing_request(stored.decode(), self.network)
            if req.account != account.account:
                raise WalletError(
                    f"this device already asked to join account {short(req.account)}…; a "
                    "device joins one account only (use another --home for another)")
            return stored.decode()
        device_key = SigningKey.generate()
        text = make_pairing_request(self.network, account.account, device_key, label).to_text()
        meta = self._key_record("device", device_key, passphrase, limits)
        self.store.set_metas(meta | {"device": bytes(device_key.verify_key), PAIRING_META: text})
        return text

    def pair_add(self, request_text: str, passphrase: str) -> Block:
        """On the account key's holder: sign the open of a new device from its request.

        Refuses, each with its reason, a request of another network or for another
        account, one added before, and one whose device is already open or revoked.
        """
        req = parse_pairing_request(request_text, self.network)
        if not self.has_key("account") or self.account is None:
            raise WalletError("this wallet does not hold the account key: run `tally devices "
                              "add` on the device where `init` or `restore` ran")
        if req.account != self.account:
            raise WalletError(
                f"this pairing request asks to join account {short(req.account)}…, not this "
                f"wallet's account {short(self.account)}…: it was made for someone else")
        with self._writing():
            self._refuse_known_device(req)
            account_key = self.load_key("account", passphrase)
            block = sign_open(req, account_key)
            self._ingest([block], meta={_seen_key(req): str(int(time.time()))})
        return block

    def check_address(self, address: Address) -> None:
        """Refuse an address made on another network, naming both networks."""
        if not address.belongs_to(self.network):
            raise WalletError(
                f"that address is of another network ({address.network_text()}…); this "
                f"wallet is on {self.genesis.name} ({short_id(self.network)}…): money sent "
                "there could never be claimed. Ask for an address made on this network")

    def knows_device(self, device: bytes) -> bool:
        """True when this replica holds an open of the device (it can check who it is)."""
        d = self.ledger.devices.get(device)
        return d is not None and d.account is not None

    def resolve_address(self, text: str) -> Address:
        """An address from any form a person was shown: a full address, a device's key
        or its short form (the first characters of the key), or a device's label.

        Keys, short forms and labels name devices this replica knows (it holds their
        open), so they are of this network by construction.
        """
        t = text.strip()
        if t.lower().startswith(ADDRESS_PREFIXES):
            address = parse_address(t)
            self.check_address(address)
            return address
        hits = self.match_devices(t)
        if len(hits) == 1:
            d = self.ledger.devices[hits[0]]
            assert d.account is not None
            return Address.of(self.network, d.account, d.key)
        if not hits:
            raise WalletError(
                f"{t[:20]!r} is neither an address (tly2…) nor a device this wallet knows: "
                "ask the payee for its address (`tally address`)")
        raise WalletError(f"{t!r} matches {len(hits)} devices; give more of the key or "
                          "the whole address")

    def match_devices(self, text: str, account: bytes | None = None) -> list[bytes]:
        """Devices with an open here whose key starts with ``text`` (at least 4 of its
        characters: ``tally`` shows 8) or whose label is ``text``; of ``account`` if given."""
        t = text.strip()
        prefix = t.lower().rstrip("…")  # a short form copied with its ellipsis
        key_like = len(prefix) >= SHORT_MATCH_MIN and set(prefix) <= BASE32_CHARS
        out = []
        for k, acct, label in self.ledger.opened_devices():
            if account is not None and acct != account:
                continue
            if label == t or (key_like and key_text(k).startswith(prefix)):
                out.append(k)
        return sorted(out)

    def match_counterparties(self, text: str) -> list[bytes]:
        """Devices this store knows of, open here or only named by a payment, whose key
        starts with ``text`` (at least 4 characters) or whose label is ``text``."""
        found = set(self.match_devices(text))
        prefix = text.strip().lower().rstrip("…")
        if len(prefix) >= SHORT_MATCH_MIN and set(prefix) <= BASE32_CHARS:
            found.update(k for k in self.store.tables.dev_refs
                         if key_text(k).startswith(prefix))
        return sorted(found)

    def _refuse_known_device(self, req: PairingRequest) -> None:
        """Refuse a request added before, or for a device already open or revoked."""
        seen = self.store.get_meta(_seen_key(req))
        if seen is not None:
            when = local_minute(int(seen.decode()))
            raise WalletError(f"this pairing request was already added on {when}: device "
                              f"{short(req.device)}… is open; nothing to do")
        d = self.ledger.devices.get(req.device)
        if d is None or not d.roots:
            return
        head = self.ledger.head(req.device)
        if head is not None and head.kind == Kind.REVOKE:
            raise WalletError(
                f"device {short(req.device)}… was revoked; a revoked device never comes "
                "back: pair the new install afresh (`tally devices pair` on an empty --home)")
        raise WalletError(f"device {short(req.device)}… is already open"
                          + (" under another account" if d.account != self.account else ""))

    # --------------------------------------------------------------- ledger
    @property
    def ledger(self) -> Ledger:
        """The ledger over the store's tables: opening it reads nothing, each query
        reads what it needs (a store of an older schema is rebuilt here, once)."""
        if self._ledger is None:
            self._synced = self._data_version()  # before reading: a later commit shows
            self.store.tables.forget()  # another connection may have written the tables
            led = Ledger(self.genesis, self.store.tables)
            if self.store.needs_rebuild:
                with _gc_paused(True), self.store.transaction():
                    for batch in self.store.old_bodies():
                        led.add([parse_entry(b, verify=False) for b in batch])
                    self.store.finish_rebuild()
                self._synced = self._data_version()
            self._ledger = led
        return self._ledger

    @property
    def exports(self) -> ExportCache:
        """The bundle sections kept ready for ``bundle export --for``: made by the first
        such export, then grown with each commit (``wallet.export_cache``)."""
        if self._exports is None:
            self._exports = ExportCache(self.home, self.store.conn)
        return self._exports

    def export_differences(self) -> list[str]:
        """How the bundle sections kept ready differ from our chains' closure computed
        afresh (``tally doctor``; empty when they agree or there are none)."""
        return self.exports.differences(self._own_tips(self.ledger))

    def _own_tips(self, led: Ledger) -> list[bytes]:
        """The last blocks of our account's devices (this one's too): the roots of what
        every payee gets from us."""
        mine = {k for k, _ in self.store.account_labels(self.account)} if self.account \
            else set()
        if self.device is not None:
            mine.add(self.device)
        return led.top_block_ids(sorted(mine))

    def refresh(self) -> bool:
        """Take in what other processes stored (another ``tally`` on this home): when
        another connection committed since the ledger was opened, its caches are
        dropped and it reads the tables afresh. True when it did."""
        if self._ledger is None or self._data_version() == self._synced:
            return False
        self._ledger = None
        _ = self.ledger
        return True

    def subscribe(self, listener: Callable[[list[StatusChange]], None]) -> None:
        """Call ``listener`` with every batch of status changes this wallet commits."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[list[StatusChange]], None]) -> None:
        """Stop calling ``listener`` (one that ``subscribe`` was given)."""
        self._listeners.remove(listener)

    def _data_version(self) -> int:
        """SQLite's count of commits by other connections to this store."""
        return self.store.conn.execute("PRAGMA data_version").fetchone()[0]

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold this home's write lock, with the ledger as the store has it now.

        Other processes (another ``tally`` command, the app, sync) may write the same
        home: every write takes the lock, and a ledger built before another connection
        committed is rebuilt, so a device never signs two blocks at one slot and the
        statuses and balances stored stay those of the whole set. Re-entrant.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock between processes
            fcntl = None  # type: ignore[assignment]
        with open(self.home / LOCK_NAME, "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                if self._data_version() != self._synced:
                    self._ledger = None  # another connection committed: read afresh
                yield
            finally:
                self._lock_depth = 0  # the lock goes with the file's closing

    def ingest(self, entries: Iterable[Entry]) -> IngestReport:
        """Merge checked entries of this network: validate, commit, notify."""
        with self._writing():
            return self._ingest(list(entries))

    def _ingest(
        self, entries: list[Entry], *, meta: dict[str, bytes | str] | None = None,
        before_commit: Callable[[], object] | None = None,
    ) -> IngestReport:
        """Merge in one transaction; ``before_commit`` runs inside it after the merge
        (what it raises rolls the whole batch back)."""
        led = self.ledger
        for e in entries:
            if e.network != self.network:
                raise WalletError(f"entry {short(e.id)}… belongs to another network")
            if isinstance(e, Vote) and e.witness not in led.witness_bit:
                raise WalletError(f"vote {short(e.id)}… is by a key that is not a witness here")
        fresh: dict[bytes, Entry] = {}
        for e in entries:
            if e.id not in led and e.id not in fresh:
                fresh[e.id] = e
        if not fresh:
            if meta:
                self.store.set_metas(meta)
            return IngestReport(len(entries), 0, [])
        try:
            with self.store.transaction():
                changes = led.add(fresh.values())
                self._decide_takings(changes)
                if meta:
                    self.store.set_metas(meta)
                if before_commit is not None:
                    before_commit()
                if self.exports.ready():  # kept once a bundle was exported for a payee
                    self.exports.update(self._own_tips(led))
        except BaseException:
            self._ledger = None  # its caches hold the batch the rollback undid
            raise
        self._synced = self._data_version()
        self.exports.forget_others()
        self._after_commit(changes)
        return IngestReport(len(entries), len(fresh), changes, tuple(fresh.values()))

    def ingest_bodies(self, bodies: list[bytes]) -> IngestReport:
        """Verify raw entries (in parallel when many) and merge them.

        Entries already held are not verified again. The whole batch is checked before
        anything is stored: one bad entry refuses it all, naming the entry's position.
        A big batch is merged while worker processes check its signatures on the other
        cores (``wallet.verify_pool``), in a transaction that commits only once every
        signature held (else it is rolled back, and the ledger's caches with it).
        """
        bulk = len(bodies) >= PARALLEL_VERIFY_MIN
        with _gc_paused(bulk):
            parsed = _parsed(bodies, held=self.ledger)
            if len(parsed.entries) < PROCESS_CHECK_MIN or parsed.malformed is not None:
                parsed.check()
                if not parsed.entries:
                    return IngestReport(len(bodies), 0, [])
                report = self.ingest(parsed.entries)
            else:
                report = self._ingest_checking(parsed)
        return IngestReport(len(bodies), report.new, report.changes, report.entries)

    def _ingest_checking(self, parsed: _Parsed) -> IngestReport:
        checks = Checks(parsed.entries)

        def all_held() -> None:
            bad = checks.result()
            if bad is not None:
                raise EncodingError(f"entry #{parsed.where[bad]}",
                                    signature_problem(parsed.entries[bad]) or "")

        try:
            with self._writing():
                return self._ingest(parsed.entries, before_commit=all_held)
        except EncodingError:
            raise
        except BaseException:
            all_held()  # a forged entry is what to report, if there is one
            raise
        finally:
            checks.close()

    def _after_commit(self, changes: list[StatusChange]) -> None:
        if self.device is not None and self.account is None:
            d = self.ledger.devices.get(self.device)
            if d is not None and d.account is not None:
                self.store.set_meta("account", d.account)
        for listener in list(self._listeners):  # one may unsubscribe from another thread
            listener(changes)

    # -------------------------------------------------------------- reading
    def status(self, block_id: bytes) -> Status | None:
        """A block's status, or None when it is not held."""
        return self.ledger.status.get(block_id)

    def balance(self) -> dict[bytes, Balance]:
        """This account's devices and their stored balances (no ledger rebuild)."""
        if self.account is None:
            return {}
        led = self.ledger
        out = {k: led.balance(k) for k, _ in self.store.account_labels(self.account)}
        if self.device is not None and self.device not in out:
            out[self.device] = led.balance(self.device)
        return out

    def devices(self) -> list[tuple[bytes, str, Balance]]:
        """This account's devices: key, label, balance."""
        if not self.account:
            return []
        led = self.ledger
        return [(k, label, led.balance(k)) for k, label in self.store.account_labels(self.account)]

    def history(self, *, limit: int = 50, before: int | None = None,
                status: str | None = None, device: bytes | None = None,
                kinds: Iterable[Kind] | None = None,
                peers: Iterable[bytes] | None = None) -> list[HistoryRow]:
        """The account's blocks (or one device's) and the payments sent to them that no
        valid receive claims yet, whatever their status; newest first, paged, filtered
        (``Store.history``: a status, block kinds, counterparty devices)."""
        if device is not None:
            devs = [device]
        elif self.account:
            devs = sorted({k for k, _, _ in self.devices()} | {self.device or b""} - {b""})
        else:
            devs = [self.device] if self.device else []
        return self.store.history(devs, limit=limit, before=before, status=status,
                                  kinds=kinds, peers=peers,
                                  witnessed=self.genesis.quorum > 0)

    # --------------------------------------------------------------- links
    def links(self) -> dict[str, str]:
        """The relays and peers this wallet syncs with: URL → ``relay`` or ``peer``."""
        raw = self.store.get_meta(LINKS_META)
        return dict(json.loads(raw)) if raw else {}

    def remember_links(self, links: dict[str, str]) -> dict[str, str]:
        """Add relays and peers (URL → kind) to those remembered; returns them all."""
        assert set(links.values()) <= LINK_KINDS, links
        known = self.links() | links
        self.store.set_meta(LINKS_META, json.dumps(known, sort_keys=True))
        return known

    def forget_link(self, url: str) -> None:
        """Forget a remembered relay or peer; say so when it was not remembered."""
        known = self.links()
        if url not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise WalletError(f"{url} is not a remembered relay or peer (remembered: {listed})")
        del known[url]
        self.store.set_meta(LINKS_META, json.dumps(known, sort_keys=True))

    # ------------------------------------------------------------- takings
    @property
    def takings(self) -> Takings:
        """This device's takings as a till (``wallet.takings``)."""
        me = self.device or b""
        if self._takings is None or self._takings.device != me:  # (a device made since)
            self._takings = Takings(self.store.conn, witnessed=self.genesis.quorum > 0,
                                    settle_period_s=self.genesis.policy.settle_period_s,
                                    device=me)
        return self._takings

    def till_limits(self) -> Limits:
        """This till's floor limits: the network's, lowered where the merchant set
        lower ones (``tally till limits``)."""
        net = Limits.of(self.genesis.policy)
        raw = self.store.get_meta(TILL_LIMITS_META)
        if raw is None:
            return net
        doc = json.loads(raw)
        return net.lowered(Limits(doc["payment"], doc["account"], doc["till"]))

    def set_till_limits(self, limits: Limits) -> Limits:
        """Keep lower floor limits for this till (never over the network's); the
        limits in force."""
        kept = Limits.of(self.genesis.policy).lowered(limits)
        self.store.set_meta(TILL_LIMITS_META, json.dumps(
            {"payment": kept.payment, "account": kept.account, "till": kept.till}))
        return kept

    def _decide_takings(self, changes: list[StatusChange]) -> None:
        """(In the ingest's transaction) decide on each send to this device from
        another account that this batch brought: provisional or held (DESIGN §5)."""
        me, account = self.device, self.account
        if me is None:
            return
        led = self.ledger
        new: dict[bytes, tuple[Block, bytes, Status]] = {}
        changed: dict[bytes, Status] = {}  # payments to this device whose status moved
        is_till = self.takings.any()
        for ch in changes:
            if ch.kind != Kind.SEND:
                continue
            if ch.old is not None:
                if is_till:  # (a wallet that never took a payment has nothing to settle)
                    changed[ch.block_id] = ch.new  # the last change is where it ends
                if ch.old.state != PENDING:
                    continue
                # pending until now: maybe a payment whose payer's open came late
            b = led.blocks.get(ch.block_id)
            if b is None or b.to_device != me or b.id in new:
                continue
            payer = led.devices.account_of(b.device)
            if payer is None or payer == account:
                continue  # a move between this account's own devices is no taking
            st = led.status.get(b.id)  # as the whole batch leaves it, not as first seen
            assert st is not None, short(b.id)
            new[b.id] = (b, payer, st)
        if changed:  # ids that are no taking here match no row
            self.takings.settle(list(changed.items()))
        if new:
            self.takings.decide_new(list(new.values()), self.till_limits(),
                                    **self._reason_writers())
        if self.genesis.quorum == 0 and (new or changed):
            self._redecide_held()
        if CHECK and (new or changed):  # the copies of statuses hold (TALLY_CHECK=1)
            wrong = copy_differences(self.store.conn, [*new, *changed])
            assert not wrong, wrong

    def _reason_writers(self) -> dict[str, Callable[[Any], str]]:
        """How a till's decisions write money and accounts."""
        g = self.genesis
        return {"money": lambda m: f"{format_amount(m, g.decimals)} {g.currency}",
                "name": lambda a: f"{short(a)}…"}

    def _redecide_held(self) -> None:
        """(With no witnesses, in a transaction) held payments the limits admit now turn
        provisional (DESIGN §5)."""
        if self.device is not None and self.takings.any():
            self.takings.redecide_held(self.till_limits(), **self._reason_writers())

    # ------------------------------------------------------------ settings
    def settings(self) -> Settings:
        """What the person set for this home (the defaults until they save)."""
        return Settings.from_json(self.store.get_meta(SETTINGS_META))

    def save_settings(self, settings: Settings) -> None:
        """Keep these settings in the home (one record, written whole)."""
        self.store.set_meta(SETTINGS_META, settings.to_json())

    def unfinal_own(self) -> int:
        """How many of this device's valid blocks wait for witness votes (0 with q = 0,
        where nothing is ever final)."""
        if self.device is None or self.genesis.quorum == 0:
            return 0
        led = self.ledger
        return sum(1 for bid in led.chain(self.device)
                   if (st := led.status.get(bid)) is not None and st.state == VALID
                   and not st.final)

    def frauds(self) -> list[FraudProof]:
        """Every fraud proof held."""
        return self.ledger.fraud_proofs()

    def memo(self, block: Block, passphrase: str) -> str | None:
        """Open a memo sealed to this device, or None when there is none."""
        if not block.memo or block.to_device != self.device:
            return None
        key = self.load_key("device", passphrase)
        try:
            return SealedBox(key.to_curve25519_private_key()).decrypt(block.memo).decode()
        except Exception as exc:  # any failure means "not for us / damaged"
            raise WalletError(f"memo of {short(block.id)}… does not open: {exc}") from exc

    # -------------------------------------------------------------- signing
    def _device_key(self, passphrase: str) -> SigningKey:
        key = self.load_key("device", passphrase)
        if bytes(key.verify_key) != self.device:
            raise WalletError("the device key file does not match this wallet")
        return key

    def _next(self) -> tuple[int, bytes]:
        """The slot and prev of this device's next block; refuse if its chain is not valid."""
        led = self.ledger
        if self.device is None:
            raise WalletError("this wallet has no device yet: run `tally init`")
        tip = led.tip(self.device)
        head = led.head(self.device)
        if tip is None:
            raise WalletError(
                "this device has no open yet: the account key's holder must run "
                "`tally devices add REQUEST`, then bring its bundle here"
            )
        if head is None or head.id != tip.id:
            st = led.status[tip.id]
            raise WalletError(
                f"this device's last block (seq {tip.seq}) is {st.label}"
                f"{' (' + st.reason + ')' if st.reason else ''}: sync before signing more"
            )
        if head.kind == Kind.REVOKE:
            raise WalletError("this device has been revoked by its account")
        d = led.devices[self.device]
        later = [led.blocks[b].seq for b in d.block_ids - d.index.keys()
                 if led.blocks[b].seq > head.seq]
        if later:  # a block at the next slot not on the main chain: a fork, never add one
            raise WalletError(
                f"this device's chain is forked at seq {min(later)}: its key signed blocks "
                "elsewhere (a copied or restored device); sign nothing more here "
                "(`tally frauds`; the account key's holder can revoke this device)"
            )
        return head.seq + 1, head.id

    def _sign(
        self,
        key: SigningKey | str,
        build: Callable[[int, bytes], Block],
        check: Callable[[], object] | None = None,
        record: Callable[[Block], object] | None = None,
    ) -> tuple[Block, Status]:
        """Sign this device's next block (``check`` first), under the home's lock;
        ``record(block)`` writes what goes with it in the same transaction."""
        if isinstance(key, str):
            key = self._device_key(key)
        with self._writing():
            if check is not None:
                check()
            seq, prev = self._next()
            block = build(seq, prev).signed(key)
            self._ingest([block], before_commit=(lambda: record(block)) if record else None)
            return block, self.ledger.status[block.id]

    def pay(
        self,
        to: Address,
        amount: int,
        passphrase: str,
        *,
        memo: str = "",
        request: PaymentRequest | None = None,
        again: bool = False,
        refunds: bytes = b"",
        record: Callable[[Block], object] | None = None,
    ) -> tuple[Block, Status]:
        """Sign a send of ``amount`` minor units, funded by final credits only.

        Refuses an address of another network, an expired request, and a request this
        account paid before unless ``again``. The memo is kept here in the clear (the
        send carries it sealed to the payee, whom only it can open).
        """
        if self.device is None:
            raise WalletError("this wallet has no device yet: run `tally init`")
        self.check_address(to)
        if to.device == self.device:
            raise WalletError("that address is this device: use another device's address")
        if request is not None and request.expires and request.expires < time.time():
            when = local_minute(request.expires)
            raise WalletError(f"the payment request expired on {when}: ask the payee for a "
                              "new one")
        if request is not None and not again:
            paid = self.paid_for(request)
            if paid:
                raise WalletError(
                    f"this request was paid already ({len(paid)} time"
                    f"{'s' if len(paid) > 1 else ''}, payment {id_text(paid[0].id)}): pass "
                    "--again to pay it once more")
        check_memo(memo)
        device = self.device
        key = self._device_key(passphrase)

        def funded() -> None:  # under the lock, on the current ledger
            self._next()  # no open yet, revoked, or a chain that is not valid: say that first
            bal = self.ledger.balance(device)
            if not self.ledger.devices[device].issuing and bal.spendable < amount:
                dec = self.genesis.decimals
                more = (f" ({format_amount(bal.incoming, dec)} more is incoming, not final yet)"
                        if bal.incoming else "")
                raise WalletError(
                    f"not enough final funds: spendable {format_amount(bal.spendable, dec)}, "
                    f"need {format_amount(amount, dec)}{more}"
                )

        sealed = b""
        if memo:
            from nacl.signing import VerifyKey

            sealed = SealedBox(VerifyKey(to.device).to_curve25519_public_key()).encrypt(
                memo.encode()
            )
        block, st = self._sign(
            key,
            lambda seq, prev: Block(
                Kind.ISSUE if self.ledger.devices[device].issuing else Kind.SEND,
                self.network, device, seq, prev, to_account=to.account,
                to_device=to.device, amount=amount,
                request_id=request.request_id if request else refunds, memo=sealed,
            ),
            funded,
            record,
        )
        if memo:
            self.store.put_memo(block.id, memo)
        return block, st

    def refund(self, payment_id: bytes, amount: int | None,
               passphrase: str) -> tuple[Block, Status]:
        """Send back all or part of a taking to the device that paid it: a send whose
        request id is the payment's id (so both sides see what it refunds), recorded
        with the taking in the same transaction. Never more than the payment, refunds
        before it counted; never for a refused or disputed taking."""
        with self._writing():
            found = self.takings.rows(ids=[payment_id])
            if not found:
                raise WalletError("no taking has that id here (`tally takings` lists them)")
            k = found[0]
            if k.state in (REFUSED, DISPUTED):
                raise WalletError(f"that taking is {k.state}: there is nothing to refund "
                                  "(write it off instead, once refused)")
            left = k.amount - self.takings.refunded(payment_id)
            minor = left if amount is None else amount
            dec = self.genesis.decimals
            if minor <= 0 or minor > left:
                raise WalletError(
                    f"that taking was {format_amount(k.amount, dec)}, of which "
                    f"{format_amount(left, dec)} is left to refund; not "
                    f"{format_amount(minor, dec)}")
            to = Address.of(self.network, k.payer_account, k.payer_device)
            at = int(time.time())
            return self.pay(
                to, minor, passphrase, memo=f"refund of payment {id_text(payment_id)}",
                refunds=payment_id,
                record=lambda b: self.takings.record_refund(b.id, payment_id, minor, at))

    def paid_for(self, request: PaymentRequest) -> list[Block]:
        """This account's sends that name the request (same payee device and request id)."""
        if not request.request_id or self.account is None:
            return []
        led = self.ledger
        out = []
        for k in led.account_devices(self.account):
            for bid in led.chain(k):
                b = led.blocks[bid]
                if (b.is_payment() and b.request_id == request.request_id
                        and b.to_device == request.address.device):
                    out.append(b)
        return out

    def receipts(self, entries: Iterable[Entry]) -> list[tuple[Block, Block]]:
        """Of these entries, the receives by which another device took a payment of
        this device: (the receive, the payment). A till claims a payment once it takes
        it, so its signed receive is the payer's receipt."""
        me, led = self.device, self.ledger
        out = []
        for e in entries:
            if isinstance(e, Block) and e.kind == Kind.RECEIVE:
                paid = led.blocks.get(e.claim)
                if paid is not None and paid.device == me and paid.kind == Kind.SEND:
                    out.append((e, paid))
        return out

    def receive(self, passphrase: str) -> list[tuple[Block, Status]]:
        """Claim every payment and revoke addressed to this device that it has not claimed."""
        if self.device is None:
            return []
        key = self._device_key(passphrase)
        out = []
        with self._writing():  # what is unclaimed, as the store has it now
            if self.genesis.quorum == 0:
                with self.store.transaction():  # the settle period may have freed room
                    self._redecide_held()
            todo = self.ledger.unclaimed_to(self.device) + self._unclaimed_via_revokes()
            waiting = self.takings.waiting_to_claim(b.id for b in todo)
            todo = [b for b in todo if b.id not in waiting]  # held: claimed once taken
            self._open_memos(key, todo)
            for s in todo:
                out.append(self._sign(
                    key,
                    lambda seq, prev, s=s: Block(
                        Kind.RECEIVE, self.network, self.device or b"", seq, prev, claim=s.id
                    ),
                ))
        return out

    def _open_memos(self, key: SigningKey, payments: list[Block]) -> None:
        """Open the sealed memos of payments to this device and keep them for history."""
        box = SealedBox(key.to_curve25519_private_key())
        for p in payments:
            if p.memo and p.to_device == self.device:
                try:
                    text = box.decrypt(p.memo).decode("utf-8")
                except (CryptoError, UnicodeDecodeError):
                    text = "(a memo that does not open: damaged or not sealed to this device)"
                self.store.put_memo(p.id, text)

    def _unclaimed_via_revokes(self) -> list[Block]:
        """Payments to a device whose valid revoke names this one, that neither claimed.

        DESIGN §4: the sibling may claim any send or issue addressed to the revoked
        device that the revoked device's blocks below the revoke do not claim.
        """
        led = self.ledger
        me = self.device
        mine = {led.blocks[i].claim for i in led.chain(me or b"")
                if led.blocks[i].kind == Kind.RECEIVE}
        out: list[Block] = []
        for rv in led.revokes_naming(me or b""):
            if rv.account != self.account:
                continue
            st = led.status.get(rv.id)
            chain = led.chain(rv.device)
            if st is None or st.state != VALID or rv.id not in chain:
                continue
            theirs = {led.blocks[i].claim for i in chain[: rv.seq]
                      if led.blocks[i].kind == Kind.RECEIVE}
            for b in led.payments_to(rv.device, (VALID, PENDING)):
                if b.id not in mine and b.id not in theirs:
                    out.append(b)
        out.sort(key=lambda b: (b.device, b.seq))
        return out

    def revoke(self, device: bytes, to_device: bytes, passphrase: str) -> tuple[Block, Status]:
        """Sign, with the account key, the revoke of one of this account's devices."""
        with self._writing():  # on the device's chain as the store has it now
            return self._revoke(device, to_device, passphrase)

    def _revoke(self, device: bytes, to_device: bytes, passphrase: str) -> tuple[Block, Status]:
        led = self.ledger
        d = led.devices.get(device)
        if d is None or d.account != self.account:
            raise WalletError(f"device {short(device)}… is not a device of this account")
        if to_device == device:
            raise WalletError("a device's balance must pass to a sibling, not to itself")
        sib = led.devices.get(to_device)
        if sib is None or sib.account != self.account:
            raise WalletError(f"device {short(to_device)}… is not a device of this account")
        head = led.head(device)
        tip = led.tip(device)
        if head is None or tip is None:
            raise WalletError(f"device {short(device)}… has no valid block to revoke after")
        if head.kind == Kind.REVOKE:
            raise WalletError(f"device {short(device)}… is already revoked")
        account_key = self.load_key("account", passphrase)
        block = Block(
            Kind.REVOKE, self.network, device, head.seq + 1, head.id,
            account=bytes(account_key.verify_key), to_account=bytes(account_key.verify_key),
            to_device=to_device,
        ).signed(account_key)
        self.ingest([block])
        return block, led.status[block.id]

    # -------------------------------------------------------------- export
    def closure(self, roots: Iterable[bytes]) -> list[bytes]:
        """The ids of the given blocks and of what a replica needs to judge them as
        this one does (``wallet.closure``), dependencies first."""
        return [e.id for e in closure(self.ledger, roots)]

    def export_entries(self, for_address: Address | None = None) -> list[Entry]:
        """What a bundle carries, dependencies first: every entry held, or what one
        payee needs from us (the chains of our account's devices and the payments and
        revokes naming the payee, with everything they depend on)."""
        led = self.ledger
        if for_address is None:
            from wallet.bundle import dependency_order

            return dependency_order(led.tables.scan())
        roots = []
        mine = {k for k, _, _ in self.devices()} | ({self.device} if self.device else set())
        for d in mine:
            tip = led.tip(d)
            if tip is not None:
                roots.append(tip.id)
        roots.extend(b.id for b in led.payments_to(for_address.device))
        roots.extend(b.id for b in led.revokes_naming(for_address.device))
        return closure(led, roots)

    def export_bundle(self, path: Path, for_address: Address) -> tuple[int, int]:
        """Write the bundle one payee needs from us (``export_entries``) to ``path``:
        the sections kept ready and one for what is the payee's alone. Returns (entries,
        bytes). Costs what is new since the last commit, not the wallet's size, once a
        first export made the sections (which costs the whole closure, once)."""
        from wallet.bundle import write_bundle

        with self._writing():
            led = self.ledger
            with self.store.transaction():
                ready = self.exports.update(self._own_tips(led))
            self._synced = self._data_version()
            roots = led.payment_ids_to(for_address.device)
            roots.extend(led.revoke_ids_naming(for_address.device))
            extra = self.exports.extra(ready, roots)
            return ready.entries + len(extra), write_bundle(path, self.network, extra, ready)

    def export_ids(self, for_address: Address | None = None) -> list[bytes]:
        """The ids of ``export_entries``."""
        return [e.id for e in self.export_entries(for_address)]

    def bodies(self, ids: list[bytes]) -> list[bytes]:
        """The signed bytes of held entries, in the order given (read in bulk)."""
        got = self.ledger.tables.entries(ids)
        return [got[i].raw for i in ids]


def check_memo(memo: str) -> None:
    """Refuse a memo that will not fit in a send once sealed, saying how much fits (a
    request's memo too: the payment copies it)."""
    from nacl.bindings import crypto_box_SEALBYTES

    from wallet.encoding import MEMO_BYTES_MAX

    room = MEMO_BYTES_MAX - crypto_box_SEALBYTES
    size = len(memo.encode())
    if size > room:
        raise WalletError(f"memo is {size} bytes; at most {room} fit in a payment")


def error_text(exc: BaseException) -> str:
    """The one line a person sees for an error."""
    if isinstance(exc, TallyError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


__all__ = ["VALID", "IngestReport", "Wallet", "error_text", "verify_bodies", "verify_threads"]
