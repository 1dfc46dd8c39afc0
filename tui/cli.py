"""``tally``: the command line (DESIGN §9). With no sub-command it will open the app.

Every command takes ``--home DIR`` (or ``TALLY_HOME``) and ``--json``; errors go to
stderr with exit status 1 (2 for a malformed command line) and change nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from tui.service import WalletService
from wallet import keys as keyfiles
from wallet import reconcile
from wallet.address import (
    Address,
    parse_address,
)
from wallet.amounts import format_amount, parse_amount
from wallet.bundle import read_bundle, write_bundle
from wallet.durations import parse_duration_s
from wallet.encoding import (
    Block,
    Genesis,
    Kind,
    Policy,
    check_quorum,
    id_from_text,
    id_text,
    key_from_text,
    key_text,
    parse_entry,
    short,
)
from wallet.errors import EncodingError, TallyError, WalletError
from wallet.floor import HELD, PROVISIONAL, REFUSED, TAKING_STATES, Limits
from wallet.ledger import INVALID, Balance, Status
from wallet.store import STATUS_FILTERS
from wallet.takings import copy_differences, local_day, write_csv
from wallet.wallet import Wallet, error_text, local_minute


def default_home() -> Path:
    """``TALLY_HOME``, else the platform's user data dir."""
    env = os.environ.get("TALLY_HOME")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("tally", "tallystick"))


BIG_JSON_ROWS = 1000
"""Rows in a ``--json`` document over which it is printed compact, not indented."""


class Out:
    """Prints for people, or collects one JSON document for scripts."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.doc: dict[str, Any] = {}

    def say(self, text: str) -> None:
        """A line for people (suppressed with --json)."""
        if not self.as_json:
            print(text, flush=True)

    def put(self, **fields: Any) -> None:
        """Fields of the JSON document."""
        self.doc.update(fields)

    def finish(self) -> None:
        """Print the JSON document, if --json."""
        if self.as_json:
            # Indented for people reading a small document; a big one (a month of
            # takings) compact, through the C encoder: the indenting one is 10x slower.
            big = sum(len(v) for v in self.doc.values() if isinstance(v, list)) > BIG_JSON_ROWS
            print(json.dumps(self.doc) if big else
                  json.dumps(self.doc, indent=2, sort_keys=True))


def _status_doc(st: Status | None) -> dict[str, Any]:
    if st is None:
        return {"status": "unknown"}
    return {"status": st.label, "state": st.state, "reason": st.reason,
            "final": st.shown_final}


def _money(w: Wallet, **amounts: int) -> dict[str, Any]:
    """Amounts for scripts, each twice: ``name`` as a decimal string in the currency
    (``"12.50"``) and ``name_minor`` as integer minor units (1250), with the currency."""
    doc: dict[str, Any] = {"currency": w.genesis.currency}
    for name, minor in amounts.items():
        doc[name] = format_amount(minor, w.genesis.decimals)
        doc[f"{name}_minor"] = minor
    return doc


def parse_expiry(text: str, now: float) -> int:
    """``--expires T`` as a Unix time: a duration from now (``90s``, ``30m``, ``2h``,
    ``7d``; a bare number is seconds) or a local time (``2026-12-24 18:00``, a date for
    its midnight). Refuses a time that is not in the future."""
    import datetime as dt

    seconds = parse_duration_s(text)
    if seconds is not None:
        if seconds <= 0:
            raise WalletError(f"--expires {text}: give a time in the future, like 30m")
        return int(now) + seconds
    try:
        when = dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError as exc:
        raise WalletError(f"--expires {text!r}: give a duration (30m, 2h, 7d) or a local "
                          "time like 2026-12-24 18:00") from exc
    if when <= now:
        raise WalletError(f"--expires {text}: that time is past ({local_minute(int(when))}); "
                          "give one in the future")
    return int(when)


def _count(n: int, noun: str) -> str:
    """``1 entry``, ``2 entries``: a count with its noun in the right number."""
    if n == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {plural}"


def _unclaimed_note(w: Wallet, out: Out) -> None:
    """Say what this account has waiting to be claimed, and where to claim it."""
    docs = []
    for k, label, b in w.devices():
        waiting = b.moving + b.to_claim
        if not waiting:
            continue
        docs.append({"device": key_text(k), "label": label, "this": k == w.device,
                     **_money(w, amount=waiting)})
        where = "here" if k == w.device else f"on {label or short(k) + '…'}"
        out.say(f"{_fmt(w, waiting)} waits to be claimed {where}: `tally receive` or "
                "`tally sync` there claims it")
    out.put(waiting=docs)


def _passphrase() -> str:
    return keyfiles.passphrase_from_env()


def _amount(w: Wallet, text: str) -> int:
    return parse_amount(text, w.genesis.decimals)


def _fmt(w: Wallet, minor: int) -> str:
    return f"{format_amount(minor, w.genesis.decimals)} {w.genesis.currency}"


# ---------------------------------------------------------------- network
def cmd_network_create(a: argparse.Namespace, out: Out) -> None:
    """Create a network whose issuer key this wallet holds."""
    witnesses = tuple(_witness_key(k) for k in a.witness or [])
    n = len(witnesses)
    quorum = a.quorum if a.quorum is not None else _proposed_quorum(n)
    check_quorum(n, quorum)
    dec = a.decimals
    if not 0 <= dec <= 18:
        raise WalletError(f"--decimals {dec}: give 0 to 18 (2 for cents)")
    if a.settle_period < 0:
        raise WalletError(f"--settle-period {a.settle_period}: give 0 or more seconds")
    floors = []
    for option, text in (("--floor-payment", a.floor_payment),
                         ("--floor-account", a.floor_account), ("--floor-till", a.floor_till)):
        try:
            floors.append(parse_amount(text, dec))
        except WalletError as exc:
            raise WalletError(f"{option}: {exc}") from exc
    policy = Policy(*floors, a.settle_period)
    issuer = SigningKey.generate()
    genesis = Genesis(a.name, a.currency.upper(), dec, bytes(issuer.verify_key), witnesses,
                      quorum, policy).signed(issuer)
    out_path = Path(a.out) if a.out else a.home / "network.genesis"
    if a.out and not out_path.parent.is_dir():
        raise WalletError(f"cannot write the genesis to {out_path}: "
                          f"{out_path.parent} is not a directory")
    w = Wallet.create_network(a.home, genesis, issuer, _passphrase(), limits=keyfiles.kdf_limits())
    try:
        out_path.write_bytes(genesis.raw)
    except OSError as exc:
        raise WalletError(f"network created in {a.home}, but the genesis could not be "
                          f"written to {out_path}: {exc.strerror}") from exc
    out.put(network=id_text(genesis.network_id), genesis_file=str(out_path),
            address=w.address().text(), quorum=quorum, witnesses=[key_text(k) for k in witnesses])
    out.say(f"network {a.name} ({id_text(genesis.network_id)}) created; quorum {quorum} of {n}")
    out.say(f"genesis written to {out_path}: give it to every wallet (`tally network join`)")
    out.say(f"issuing device address: {w.address().text()}")


def _witness_key(text: str) -> bytes:
    """A witness key given as a key file (`tally-relay keygen`) or as its public key."""
    p = Path(text)
    if p.exists():
        return keyfiles.read_key_info(p)[1]
    try:
        return key_from_text(text, "witness key")
    except EncodingError as exc:
        raise WalletError(
            f"--witness {text}: no such key file, and not a 52-character public key "
            "(`tally-relay keygen FILE --kind witness` prints one)") from exc


def _proposed_quorum(n: int) -> int:
    if n == 0:
        return 0
    f = (n - 1) // 3
    return max(2 * f + 1, n // 2 + 1)


def cmd_network_join(a: argparse.Namespace, out: Out) -> None:
    """Join a network from its genesis file."""
    try:
        raw = Path(a.file).read_bytes()
    except OSError as exc:
        raise WalletError(f"cannot read {a.file}: {exc.strerror}") from exc
    w = Wallet.join(a.home, raw)
    out.put(network=id_text(w.network), name=w.genesis.name)
    out.say(f"joined network {w.genesis.name} ({id_text(w.network)}); next, one of:")
    out.say("  `tally init`                      a new account")
    out.say("  `tally restore`                   an account from its recovery phrase")
    out.say("  `tally devices pair ADDRESS`      a device of an account you have "
            "(ADDRESS: `tally address` there)")


def cmd_network_show(a: argparse.Namespace, out: Out) -> None:
    """Show the network this wallet is on."""
    w = Wallet.open(a.home)
    g = w.genesis
    p = g.policy
    out.put(network=id_text(w.network), name=g.name, currency=g.currency, decimals=g.decimals,
            issuer=key_text(g.issuer), witnesses=[key_text(k) for k in g.witnesses],
            quorum=g.quorum, floor_payment=p.floor_payment, floor_account=p.floor_account,
            floor_till=p.floor_till, settle_period_s=p.settle_period_s)
    out.say(f"{g.name}  {id_text(w.network)}")
    out.say(f"currency {g.currency}, {g.decimals} decimals; issuer {short(g.issuer)}…")
    out.say(f"witnesses {len(g.witnesses)}, quorum {g.quorum}")
    out.say(f"floor limits: payment {_fmt(w, p.floor_payment)}, account "
            f"{_fmt(w, p.floor_account)}, till {_fmt(w, p.floor_till)}; "
            f"settle period {p.settle_period_s} s")


# ---------------------------------------------------------------- identity
def cmd_init(a: argparse.Namespace, out: Out) -> None:
    """A new account and this device."""
    w = Wallet.open(a.home)
    phrase = w.init(_passphrase(), label=a.label, limits=keyfiles.kdf_limits())
    out.put(address=w.address().text(), phrase=phrase)
    out.say(f"address: {w.address().text()}")
    out.say("recovery phrase (write it down; it restores the account key):")
    out.say(f"  {phrase}")


def cmd_restore(a: argparse.Namespace, out: Out) -> None:
    """Rebuild the account key from its phrase (TALLY_PHRASE, a prompt, or one line of
    standard input); make a new device under it."""
    w = Wallet.open(a.home)
    phrase = os.environ.get("TALLY_PHRASE")
    if not phrase:
        if sys.stdin.isatty():
            phrase = input("recovery phrase (24 words): ")
        else:
            phrase = sys.stdin.readline()
    if not phrase.strip():
        raise WalletError("no recovery phrase given: type it at the prompt, pipe it in "
                          "(`tally restore < phrase.txt`), or set TALLY_PHRASE")
    w.restore(phrase, _passphrase(), label=a.label, limits=keyfiles.kdf_limits())
    out.put(address=w.address().text())
    out.say(f"account restored; this is a new device: {w.address().text()}")
    out.say("sync to get the history back, then `tally devices revoke` the devices you lost")


def cmd_address(a: argparse.Namespace, out: Out) -> None:
    """This device's address."""
    w = Wallet.open(a.home)
    addr = w.address()
    out.put(address=addr.text(), account=key_text(addr.account), device=key_text(addr.device))
    out.say(addr.text())


def cmd_request(a: argparse.Namespace, out: Out) -> None:
    """Print a payment request."""
    svc = WalletService.open(a.home)
    w = svc.wallet
    expires = parse_expiry(a.expires, time.time()) if a.expires else 0
    try:
        rid = bytes.fromhex(a.id) if a.id else None
    except ValueError as exc:
        raise WalletError(f"request id {a.id!r} is not hex (like 0a1b2c)") from exc
    req = svc.request(a.amount, memo=a.memo or "", expires=expires, request_id=rid)
    rid = req.request_id
    out.put(request=req.uri(), request_id=rid.hex(), **_money(w, amount=req.amount),
            expires=expires or None, expires_at=local_minute(expires) if expires else None)
    out.say(req.uri())
    if expires:
        out.say(f"expires {local_minute(expires)}")
    if a.qr_file:
        import segno

        path = Path(a.qr_file)
        if path.suffix.lower() not in (".svg", ".png"):
            raise WalletError(f"--qr-file {path}: name an .svg or .png file")
        segno.make(req.uri(), error="m").save(str(path), scale=8, border=2)
        out.put(qr_file=str(path))
        out.say(f"QR code written to {path}")
    if a.qr:
        drawing = svc.qr_text(req.uri())
        out.put(qr_text=drawing)
        out.say(drawing.rstrip("\n"))


# ---------------------------------------------------------------- payments
def _confirm(question: str, refusal: str, yes: bool) -> None:
    """Go on when ``--yes`` was given or the person answers y; else refuse with why."""
    if yes:
        return
    if sys.stdin.isatty():
        answer = input(f"{question} [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return
        raise WalletError("not paid: nothing was signed")
    raise WalletError(f"{refusal}; pass --yes to go on anyway")


def _confirm_unknown_payee(w: Wallet, to: Address, yes: bool) -> None:
    """A payee whose open this wallet lacks cannot be checked: ask before paying it."""
    if w.knows_device(to.device):
        return
    why = (f"device {short(to.device)}… has no open in this wallet yet, so it cannot know "
           "the device (sync with its relay first, and it will)")
    _confirm(f"{why}. Pay it anyway?", why, yes)


def cmd_pay(a: argparse.Namespace, out: Out) -> None:
    """Sign a send."""
    svc = WalletService.open(a.home)
    w = svc.wallet
    payee = svc.payee(a.to, a.amount)
    to, amount, req = payee.address, payee.amount, payee.request
    w.check_address(to)
    _confirm_unknown_payee(w, to, a.yes)
    held = svc.hold_warning(payee)
    if held:
        print(f"tally: note: {held}", file=sys.stderr)
    block, st = svc.pay(payee, memo=a.memo, again=a.again)
    out.put(till_holds=held, id=id_text(block.id), seq=block.seq, **_money(w, amount=amount),
            to=to.text(), to_device=key_text(to.device), to_account=key_text(to.account),
            request_id=req.request_id.hex() if req else None, **_status_doc(st))
    out.say(f"paid {_fmt(w, amount)} to {short(to.device)}…: {st.label} (id {id_text(block.id)})")


def cmd_issue(a: argparse.Namespace, out: Out) -> None:
    """Issue new money (issuer only)."""
    w = Wallet.open(a.home)
    if not w.has_key("issuer"):
        raise WalletError("only the wallet that created the network can issue")
    to = w.resolve_address(a.to)
    amount = _amount(w, a.amount)
    _confirm_unknown_payee(w, to, a.yes)
    block, st = w.pay(to, amount, _passphrase())
    out.put(id=id_text(block.id), seq=block.seq, **_money(w, amount=amount), to=to.text(),
            to_device=key_text(to.device), **_status_doc(st))
    out.say(f"issued {_fmt(w, amount)} to {short(to.device)}…: {st.label}")


def cmd_receive(a: argparse.Namespace, out: Out) -> None:
    """Claim every send addressed to this device."""
    svc = WalletService.open(a.home)
    w = svc.wallet
    done = svc.receive()
    led = w.ledger
    items = []
    for block, st in done:
        claimed = led.blocks[block.claim]
        value = led.revoke_value(claimed.id) if claimed.kind == Kind.REVOKE else claimed.amount
        items.append({"id": id_text(block.id), "claims": id_text(claimed.id),
                      "kind": claimed.kind.name.lower(), "from": key_text(claimed.device),
                      **_money(w, amount=value), **_status_doc(st),
                      "payment_status": _status_doc(led.status.get(claimed.id))["status"]})
        what = (f"{_fmt(w, value)}, a revoked device's balance," if claimed.kind == Kind.REVOKE
                else _fmt(w, value))
        out.say(f"received {what} from {short(claimed.device)}…: {st.label}")
    out.put(received=items)
    if not done:
        out.say("nothing to receive")
    _refused_note(w, out)


def _refused_note(w: Wallet, out: Out) -> None:
    """Name the payments addressed to this device that the ledger refused (invalid): a
    merchant must see them, and why, not only an empty receive."""
    led = w.ledger
    refused = led.payments_to(w.device or b"", (INVALID,))
    out.put(refused=[{"id": id_text(b.id), "from": key_text(b.device),
                      **_money(w, amount=b.amount), "reason": led.status[b.id].reason}
                     for b in refused])
    if refused:
        reasons = ", ".join(sorted({led.status[b.id].reason for b in refused}))
        were, them = ("was", "it") if len(refused) == 1 else ("were", "them")
        out.say(f"{_count(len(refused), 'payment')} to this device {were} refused "
                f"({reasons}): `tally history --status invalid` lists {them}")


def cmd_balance(a: argparse.Namespace, out: Out) -> None:
    """Spendable, incoming, moving and to claim: per device and for the account."""
    w = Wallet.open(a.home)
    bal = w.balance()
    labels = {k: lbl for k, lbl, _ in w.devices()}
    devs = []
    total = Balance(0, 0)
    for k, b in sorted(bal.items()):
        total = total + b
        devs.append({"device": key_text(k), "label": labels.get(k, ""), "this": k == w.device,
                     **_money(w, spendable=b.spendable, incoming=b.incoming, moving=b.moving,
                              to_claim=b.to_claim, total=b.total)})
        mark = "*" if k == w.device else " "
        extra = "".join(f"  {name} {_fmt(w, v)}" for name, v in
                        (("moving in", b.moving), ("to claim", b.to_claim)) if v)
        out.say(f"{mark} {short(k)}… {labels.get(k, ''):12} spendable "
                f"{_fmt(w, b.spendable):>16}  incoming {_fmt(w, b.incoming):>16}{extra}")
    out.put(devices=devs, decimals=w.genesis.decimals, witnessed=w.genesis.quorum > 0,
            **_money(w, spendable=total.spendable, incoming=total.incoming,
                     moving=total.moving, to_claim=total.to_claim, total=total.total))
    out.say(f"account: total {_fmt(w, total.total)} = spendable {_fmt(w, total.spendable)}"
            f" + incoming {_fmt(w, total.incoming)} (not final yet)"
            f" + moving between its devices {_fmt(w, total.moving)}"
            f" + to claim {_fmt(w, total.to_claim)}")
    if w.genesis.quorum == 0:
        out.say("this network has no witnesses: nothing here is ever final")
    _unclaimed_note(w, out)


def cmd_history(a: argparse.Namespace, out: Out) -> None:
    """The account's blocks and the payments sent to it, with statuses, newest first."""
    if a.limit < 1:
        raise WalletError(f"--limit {a.limit}: give 1 or more rows per page")
    svc = WalletService.open(a.home)
    w = svc.wallet
    device = svc.device(a.device) if a.device else None
    rows = w.history(limit=a.limit, before=a.before, status=a.status, device=device)
    labels = {k: lbl for k, lbl, _ in w.devices()}
    several = len({r.device for r in rows if not r.incoming}) > 1 or a.all
    # A receive shows the request id of the payment it claims: what a merchant matches.
    claimed = w.store.bodies_of({r.claim for r in rows if r.kind == Kind.RECEIVE and r.claim})
    items = []
    for r in rows:
        block = parse_entry(r.body, verify=False)
        assert isinstance(block, Block), "history lists blocks, not votes"
        if r.kind == Kind.RECEIVE and r.claim in claimed:
            block = parse_entry(claimed[r.claim], verify=False)
            assert isinstance(block, Block), "a receive claims a block"
        request_id = block.request_id.hex() if block.is_payment() else None
        direction = ("in" if r.incoming or r.kind == Kind.RECEIVE
                     else "out" if r.kind in (Kind.SEND, Kind.ISSUE, Kind.REVOKE) else "")
        doc = {"ref": r.ref, "id": id_text(r.id), "kind": r.kind.name.lower(),
               "direction": direction, "device": key_text(r.device),
               "device_label": labels.get(r.device, ""), "seq": r.seq,
               "peer": key_text(r.peer) if r.peer else None, "status": r.status,
               "reason": r.reason, "final": r.final and r.witnessed and r.state == "valid",
               "seen": r.seen, "date": local_minute(r.seen), "memo": r.memo,
               "request_id": request_id or None,
               "claims": id_text(r.claim) if r.claim else None, "unclaimed": r.incoming}
        if r.amount is not None:
            doc |= _money(w, amount=r.amount)
        items.append(doc)
        amt = _fmt(w, r.amount) if r.amount else ""
        arrow = "←" if direction == "in" else "→"
        # An unclaimed payment's block is the payer's: the arrow names the payer, and the
        # device column this account's device it is addressed to.
        mine, theirs = (r.peer, r.device) if r.incoming else (r.device, r.peer)
        peer = f"{arrow} {short(theirs)}…" if theirs and direction else ""
        why = f" ({r.reason})" if r.reason else ""
        who = (f"{(labels.get(mine) or short(mine) + '…') if mine else '':10} "
               if several else "")
        kind = "payment" if r.incoming else r.kind.name.lower()
        note = f"  “{r.memo}”" if r.memo else ""
        note += f"  request {request_id}" if request_id else ""
        note += "  (not claimed yet)" if r.incoming and r.state == "valid" else ""
        out.say(f"{r.ref:>7} {local_minute(r.seen)} {who}{kind:8} {amt:>14} {peer:12} "
                f"{r.status}{why}{note}")
    nxt = rows[-1].ref if len(rows) == a.limit else None
    out.put(history=items, next_before=nxt)
    if not rows:
        out.say("no blocks")
    elif nxt is not None:
        out.say(f"more: tally history --before {nxt}")


def cmd_frauds(a: argparse.Namespace, out: Out) -> None:
    """Fraud proofs held."""
    w = Wallet.open(a.home)
    proofs = w.frauds()
    out.put(frauds=[{"device": key_text(p.device), "seq": p.seq,
                     "blocks": [id_text(i) for i in p.block_ids],
                     "equivocation": p.equivocation} for p in proofs])
    for p in proofs:
        kind = "witness equivocation" if p.equivocation else "fork"
        out.say(f"{kind}: device {short(p.device)}… seq {p.seq}: "
                + ", ".join(id_text(i)[:10] for i in p.block_ids))
    if not proofs:
        out.say("no fraud proofs")


def _day_start(text: str, flag: str) -> int:
    """A local date (``2026-12-08``) as the Unix time its day starts."""
    import datetime as dt

    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise WalletError(f"{flag} {text!r}: give a date like 2026-12-08") from exc
    return int(dt.datetime.combine(day, dt.time()).timestamp())


def cmd_takings(a: argparse.Namespace, out: Out) -> None:
    """Takings per till and per day: each payment with its decision and where it stands
    now, totals per status, refunds netted, requests matched, the evidence for each
    refused one, and the exposure against each floor limit (DESIGN §5)."""
    svc = WalletService.open(a.home)
    w = svc.wallet
    since = _day_start(a.since, "--since") if a.since else None
    until = _day_start(a.until, "--until") + 86400 if a.until else None
    till = (reconcile.ALL_TILLS if a.till == "all" else svc.device(a.till) if a.till
            else None)
    rep = reconcile.build(w, since=since, until=until, till=till, status=a.status,
                          remember=True)
    rows = rep.rows
    if a.csv:
        g = w.genesis
        n = write_csv(Path(a.csv), rows, currency=g.currency,
                      amount_text=lambda m: format_amount(m, g.decimals),
                      evidence={i: e.text() for i, e in rep.evidence.items()})
        out.put(csv=str(a.csv), csv_rows=n)
        out.say(f"wrote {_count(n, 'taking')} to {a.csv}")
    totals = rep.totals
    out.put(days=_merged_days(rep))
    if not a.status:  # a whole report (a status picked out is no report of the day)
        out.put(changed=[{"id": id_text(k.id), "till": key_text(k.till), "was": was,
                          "now": k.state} for k, was in rep.changed])
        for k, was in [] if out.as_json else rep.changed:
            out.say(f"since the last report: {id_text(k.id)[:10]} {_fmt(w, k.amount)} "
                    f"{was or 'new'} -> {k.state}")
    refunded = rep.refunded
    out.put(refunded=sum(refunded.values()), net=rep.net)
    out.put(requests=[{"request_id": r.id.hex(), "memo": r.memo, "made_at": r.made_at,
                       "expires": r.expires or None, "match": word,
                       **_money(w, amount=r.amount, paid=paid)}
                      for r, word, paid in rep.requests])
    out.put(tills=[{"till": key_text(t.till), "label": t.label, "this": t.this,
                    "totals": t.totals, "days": t.days, "count": len(t.rows),
                    "exposure_minor": rep.exposure.total if t.this else t.exposure}
                   for t in rep.tills])
    dec = w.genesis.decimals  # (a month is 100,000 rows: each built directly, and
    keys = _Memo(key_text)    # the few keys and amounts they repeat written once each)
    amounts = _Memo(lambda m: format_amount(m, dec))
    proofs = {i: e.doc() for i, e in rep.evidence.items()}
    out.put(currency=w.genesis.currency,
            takings=[{"id": id_text(k.id), "till": keys[k.till],
                      "payer_device": keys[k.payer_device],
                      "payer_account": keys[k.payer_account],
                      "request_id": k.request_id.hex() if k.request_id else None,
                      "taken_at": k.taken_at, "state": k.state, "decision": k.decision,
                      "reason": k.reason, "status_reason": k.status_reason,
                      "written_off": k.written_off, "amount": amounts[k.amount],
                      "amount_minor": k.amount, "refunded_minor": refunded.get(k.id, 0),
                      "evidence": proofs.get(k.id)}
                     for k in rows],
            totals=totals,  # minor units per state
            exposure=_money(w, total=rep.exposure.total),
            limits=_money(w, payment=rep.limits.payment, account=rep.limits.account,
                          till=rep.limits.till))
    if out.as_json:
        return
    for t in rep.tills:
        if len(rep.tills) > 1:
            out.say(f"till {t.label or short(t.till) + '…'}"
                    + (" (this device)" if t.this else "") + ":")
        for k in t.rows:
            why = (rep.evidence[k.id].text() if k.id in rep.evidence
                   else k.reason if k.state in (HELD, PROVISIONAL) else k.status_reason)
            out.say(f"{local_minute(k.taken_at)}  {_fmt(w, k.amount):>14}  from "
                    f"{short(k.payer_account)}…  {k.state:<11} {id_text(k.id)[:10]}  {why}")
        if len(rep.tills) > 1:
            out.say("  totals: " + ", ".join(f"{s} {_fmt(w, v)}" for s, v in t.totals.items()))
    if not rows:
        out.say("no takings" + (" in that span" if since or until or a.status else ""))
    out.say("totals: " + ", ".join(f"{s} {_fmt(w, v)}" for s, v in totals.items()))
    if refunded:
        out.say(f"refunded {_fmt(w, sum(refunded.values()))}; net {_fmt(w, rep.net)}")
    for r, word, paid in rep.requests:
        out.say(f"request {r.id.hex()} {_fmt(w, r.amount)} {r.memo!r}: {word}"
                + (f" ({_fmt(w, paid)} paid)" if paid and word != "paid" else ""))
    lim = rep.limits
    out.say(f"exposure {_fmt(w, rep.exposure.total)} of {_fmt(w, lim.till)} (floor per "
            f"till); per payment {_fmt(w, lim.payment)}, per payer account "
            f"{_fmt(w, lim.account)}")


class _Memo(dict):
    """A dict that computes a missing value once: ``memo[x]`` is ``f(x)``."""

    def __init__(self, f: Callable[[Any], Any]) -> None:
        super().__init__()
        self.f = f

    def __missing__(self, key: Any) -> Any:
        value = self[key] = self.f(key)
        return value


def _merged_days(rep: reconcile.TakingsReport) -> dict[str, dict[str, int]]:
    """Totals per state per day over every till of a report."""
    if len(rep.tills) == 1:
        return rep.tills[0].days
    days: dict[str, dict[str, int]] = {}
    for t in rep.tills:
        for day, by_state in t.days.items():
            into = days.setdefault(day, dict.fromkeys(TAKING_STATES, 0))
            for state, v in by_state.items():
                into[state] += v
    return dict(sorted(days.items()))


def cmd_takings_close(a: argparse.Namespace, out: Out) -> None:
    """The daily close (a Z-report): one day's takings per till, totals per status,
    refunds and net, numbered and kept."""
    svc = WalletService.open(a.home)
    w = svc.wallet
    day = a.day or local_day(int(time.time()))
    start = _day_start(day, "--day")
    rep = reconcile.build(w, since=start, until=start + 86400, till=reconcile.ALL_TILLS)
    made = int(time.time())
    tills = []
    for t in rep.tills:
        refunds = sum(rep.refunded.get(k.id, 0) for k in t.rows)
        kept = sum(v for st, v in t.totals.items() if st != REFUSED)
        tills.append({"till": key_text(t.till), "label": t.label, "this": t.this,
                      "count": len(t.rows),
                      "counts": {s: sum(1 for k in t.rows if k.state == s)
                                 for s in TAKING_STATES},
                      "totals": t.totals, "refunded": refunds, "net": kept - refunds,
                      "exposure": rep.exposure.total if t.this else t.exposure})
    doc = {"day": day, "made_at": made, "currency": w.genesis.currency, "tills": tills,
           "totals": rep.totals, "refunded": sum(rep.refunded.values()), "net": rep.net}
    before = w.takings.closes(day)
    with w.store.transaction():
        n = w.takings.close(day, json.dumps(doc, sort_keys=True), made)
    out.put(z=n, again=[m for m, _ in before], **doc)
    out.say(f"Z-report {n} — {day} — {w.genesis.currency}"
            + (f" (again: Z {', '.join(str(m) for m, _ in before)} closed this day "
               "before)" if before else ""))
    for t in tills:
        out.say(f"till {t['label'] or t['till'][:12] + '…'}"
                + (" (this device)" if t["this"] else "") + f": {t['count']} takings")
        for s in TAKING_STATES:
            out.say(f"  {s:<12} {t['counts'][s]:>5}  {_fmt(w, t['totals'][s]):>16}")
        out.say(f"  {'refunded':<12} {'':>5}  {_fmt(w, t['refunded']):>16}")
        out.say(f"  {'net':<12} {'':>5}  {_fmt(w, t['net']):>16}")
        out.say(f"  {'at risk':<12} {'':>5}  {_fmt(w, t['exposure']):>16}")
    out.say("all tills: " + ", ".join(f"{s} {_fmt(w, v)}" for s, v in rep.totals.items())
            + f"; net {_fmt(w, rep.net)}")


def cmd_takings_write_off(a: argparse.Namespace, out: Out) -> None:
    """Take a refused taking out of the exposure (the merchant books the loss)."""
    w = Wallet.open(a.home)
    pid = _taking_id(a.id)
    with w.store.transaction():
        k = w.takings.write_off(pid)
    out.put(written_off=id_text(k.id), **_money(w, amount=k.amount))
    out.say(f"wrote off {_fmt(w, k.amount)} from {short(k.payer_account)}…: it no longer "
            "counts in this till's exposure")


ID_ARG_PREFIX = "id:"
"""Marks an entry id on the command line (``main`` adds it to one that starts with -)."""
DASHED_ENTRY_ID = re.compile(r"^-[A-Za-z0-9_-]{42}$")


def _taking_id(text: str) -> bytes:
    """A payment id as ``tally takings`` prints it."""
    try:
        return id_from_text(text.strip().removeprefix(ID_ARG_PREFIX))
    except (EncodingError, ValueError) as exc:
        raise WalletError(f"{text!r} is not a payment id (copy one from `tally takings`)"
                          ) from exc


def cmd_refund(a: argparse.Namespace, out: Out) -> None:
    """Send back all or part of a taking to the device that paid it (also offline: the
    refund goes out with the next sync or bundle)."""
    w = Wallet.open(a.home)
    pid = _taking_id(a.payment_id)
    amount = parse_amount(a.amount, w.genesis.decimals) if a.amount else None
    block, st = w.refund(pid, amount, _passphrase())
    left = w.takings.rows(ids=[pid])[0].amount - w.takings.refunded(pid)
    out.put(refund=id_text(block.id), payment=id_text(pid), **_money(w, amount=block.amount,
                                                                      left=left),
            **_status_doc(st))
    out.say(f"refunded {_fmt(w, block.amount)} of payment {id_text(pid)[:10]}: {st.label} "
            f"({_fmt(w, left)} left refundable)")


def cmd_till_limits(a: argparse.Namespace, out: Out) -> None:
    """Show this till's floor limits, or lower them (never over the network's)."""
    w = Wallet.open(a.home)
    limits = w.till_limits()
    if a.payment or a.account or a.till:
        dec = w.genesis.decimals
        asked = Limits(parse_amount(a.payment, dec) if a.payment else limits.payment,
                       parse_amount(a.account, dec) if a.account else limits.account,
                       parse_amount(a.till, dec) if a.till else limits.till)
        limits = w.set_till_limits(asked)
        if limits != asked:
            out.say("the network's floor limits are the highest a till may have: kept "
                    "those where you asked for more")
    out.put(limits=_money(w, payment=limits.payment, account=limits.account,
                          till=limits.till))
    out.say(f"floor limits: per payment {_fmt(w, limits.payment)}, per payer account "
            f"{_fmt(w, limits.account)}, per till {_fmt(w, limits.till)}")


def cmd_doctor(a: argparse.Namespace, out: Out) -> None:
    """Rebuild the ledger's state from the entries alone and compare with the store."""
    from wallet.doctor import examine

    w = Wallet.open(a.home)
    _ = w.ledger  # a store of an older schema is rebuilt first
    from wallet.doctor import REBUILD_BATCH as step_min

    step = max(step_min, w.store.count() // 10)
    shown = [0]

    def progress(done: int, total: int) -> None:
        if total < 2 * step_min or getattr(a, "json", False):
            return  # quick, or a script reads stdout: no progress to show
        if done - shown[0] >= step or done == total:
            shown[0] = done
            print(f"tally: rebuilt {done:,} of {total:,} entries…", file=sys.stderr, flush=True)

    report = examine(w.store, w.genesis, progress=progress)
    for d in [*w.export_differences(), *copy_differences(w.store.conn)]:
        report.note(d)
    out.put(entries=report.entries, integrity=report.integrity, ok=report.ok,
            differences=report.count, shown=report.differences)
    if report.integrity != "ok":
        out.say(f"SQLite integrity check: {report.integrity}")
    for d in report.differences:
        out.say(d)
    if report.count > len(report.differences):
        out.say(f"… and {report.count - len(report.differences)} more differences")
    if report.ok:
        out.say(f"checked {_count(report.entries, 'entry')}: the stored state "
                "equals a rebuild from the entries alone")
    else:
        raise WalletError(
            f"the stored state differs from a rebuild in {report.count} places (listed "
            "above): keep a copy of the wallet home and report it; the entries themselves "
            "are intact" if report.integrity == "ok" else
            "the wallet file is damaged: restore it from a backup or re-sync into a new home")


# ---------------------------------------------------------------- devices
def cmd_devices_list(a: argparse.Namespace, out: Out) -> None:
    """This account's devices."""
    w = Wallet.open(a.home)
    items = []
    for k, lbl, b in w.devices():
        items.append({"device": key_text(k), "label": lbl, "spendable": b.spendable,
                      "incoming": b.incoming, "this": k == w.device})
        out.say(f"{'*' if k == w.device else ' '} {key_text(k)}  {lbl:12} {_fmt(w, b.spendable)}")
    out.put(devices=items)


def cmd_devices_pair(a: argparse.Namespace, out: Out) -> None:
    """On the new device: make its key and print a pairing request."""
    w = Wallet.open(a.home)
    account = parse_address(a.account_address)
    text = w.pair_request(_passphrase(), account, label=a.label, limits=keyfiles.kdf_limits())
    out.put(request=text, device=key_text(w.device or b""), account=key_text(account.account))
    out.say(text)
    out.say(f"on the account key's holder run: tally devices add {text[:24]}…")
    out.say(f"check that it shows device {short(w.device or b'')}…; lost it? run this again")


def cmd_devices_add(a: argparse.Namespace, out: Out) -> None:
    """On the account key's holder: sign a new device's open."""
    w = Wallet.open(a.home)
    block = w.pair_add(a.request, _passphrase())
    out.put(device=key_text(block.device), label=block.label, open=id_text(block.id))
    out.say(f"device {short(block.device)}… ({block.label}) added to this account")
    out.say("bring it its open: `tally bundle export FILE`, then `tally bundle import FILE` there")


def cmd_devices_revoke(a: argparse.Namespace, out: Out) -> None:
    """Revoke a device, passing its balance to a sibling."""
    svc = WalletService.open(a.home)
    w = svc.wallet
    dev = svc.device(a.device)
    to = svc.device(a.to) if a.to else w.device
    if to is None:
        raise WalletError("give --to DEVICE: the sibling that takes the balance")
    block, st = w.revoke(dev, to, _passphrase())
    out.put(id=id_text(block.id), device=key_text(dev), to=key_text(to), **_status_doc(st))
    out.say(f"revoked {short(dev)}…; its balance passes to {short(to)}…: {st.label}")
    _unclaimed_note(w, out)


def cmd_move(a: argparse.Namespace, out: Out) -> None:
    """Move money to another device of this account (escrow)."""
    svc = WalletService.open(a.home)
    w = svc.wallet
    to = svc.device(a.to)
    amount = svc.amount(a.amount)
    block, st = svc.move(a.amount, to)
    out.put(id=id_text(block.id), **_money(w, amount=amount), to=key_text(to),
            **_status_doc(st))
    out.say(f"moved {_fmt(w, amount)} to {short(to)}…: {st.label}")
    _unclaimed_note(w, out)


def cmd_sweep(a: argparse.Namespace, out: Out) -> None:
    """Move this till's final takings (its spendable money) to another device of the
    account (the merchant's main one)."""
    svc = WalletService.open(a.home)
    w = svc.wallet
    to = svc.device(a.to) if a.to else None
    moved = svc.sweep(to)
    if moved is None:
        out.put(swept=None, **_money(w, amount=0))
        out.say("nothing final to sweep: this device's spendable money is 0")
        return
    block, st = moved
    out.put(swept=id_text(block.id), to=key_text(block.to_device),
            **_money(w, amount=block.amount), **_status_doc(st))
    out.say(f"swept {_fmt(w, block.amount)} to {short(block.to_device)}…: {st.label}")


# ---------------------------------------------------------------- bundles
FIRST_EXPORT_NOTICE_MIN = 20_000
"""Entries held from which a wallet's first ``bundle export --for`` says it takes long
(seconds: about 35 µs an entry of the closure)."""


def cmd_bundle_export(a: argparse.Namespace, out: Out) -> None:
    """Write the entries another wallet needs to a file."""
    w = Wallet.open(a.home)
    if a.for_address:
        to = w.resolve_address(a.for_address)
        held = w.store.count()
        if not w.exports.ready() and held >= FIRST_EXPORT_NOTICE_MIN:
            print(f"tally: this wallet's first bundle for a payee gathers the history of its "
                  f"money from {held:,} entries held, once (later ones add what is new)…",
                  file=sys.stderr, flush=True)
        count, size = w.export_bundle(Path(a.file), to)
    else:
        bodies = [e.raw for e in w.export_entries()]
        count, size = len(bodies), write_bundle(Path(a.file), w.network, bodies)
    out.put(file=a.file, entries=count, bytes=size)
    out.say(f"wrote {_count(count, 'entry')} ({size} bytes) to {a.file}")


def cmd_bundle_import(a: argparse.Namespace, out: Out) -> None:
    """Merge a bundle file: checked whole before anything is stored."""
    w = Wallet.open(a.home)
    bodies = read_bundle(Path(a.file), w.network)
    report = w.ingest_bodies(bodies)
    out.put(entries=len(bodies), new=report.new, changes=len(report.changes))
    if report.new == 0 and bodies:
        out.say(f"nothing new: all {_count(len(bodies), 'entry')} of {a.file} are already "
                "here (imported before)")
    else:
        out.say(f"imported {report.new} new of {_count(len(bodies), 'entry')}; "
                f"{_count(len(report.changes), 'status change')}")
    receipts = w.receipts(report.entries)
    out.put(receipts=[{"payment": id_text(p.id), "receive": id_text(r.id),
                       "by": key_text(r.device), **_money(w, amount=p.amount)}
                      for r, p in receipts])
    for r, p in receipts:
        out.say(f"receipt: {short(r.device)}… took your payment {id_text(p.id)[:10]} of "
                f"{_fmt(w, p.amount)} (its signed receive {id_text(r.id)[:10]})")
    _unclaimed_note(w, out)


# ---------------------------------------------------------------- sync
class _SyncPrinter:
    """Sync's events for people: news on stdout, progress and trouble on stderr."""

    PROGRESS_EVERY_S = 1.0

    def __init__(self, w: Wallet, out: Out, *, quiet_failures: bool) -> None:
        self.w = w
        self.out = out
        self.quiet_failures = quiet_failures  # --once: one error line at the end
        self._progress_at: dict[str, float] = {}

    def __call__(self, e: Any) -> None:
        from sync import client as sc

        if isinstance(e, sc.Linked):
            self._progress_at[e.url] = time.monotonic()
            self.out.say(f"connected to {e.url} ({e.role} {short(e.peer_key)}…)")
        elif isinstance(e, sc.Progress):
            now = time.monotonic()
            if now - self._progress_at.get(e.url, now) >= self.PROGRESS_EVERY_S:
                self._progress_at[e.url] = now
                print(f"tally: {e.url}: {e.received} entries received…", file=sys.stderr,
                      flush=True)
        elif isinstance(e, sc.Synced):
            self.out.say(f"in sync with {e.url}: {_count(e.count, 'entry')} ({e.received} new)")
        elif isinstance(e, sc.Pushed):
            self.out.say(f"sent {_count(e.count, 'new entry')} to {e.url}")
        elif isinstance(e, sc.Claimed):
            self.out.say(f"received {_fmt(self.w, e.amount or 0)} from {short(e.payer)}…: "
                         f"{e.status}")
        elif isinstance(e, sc.AwaitingVotes):
            self.out.say(f"waiting up to {e.timeout_s:g} s for the witness to vote "
                         f"{_count(e.blocks, 'block')} of this device…")
        elif isinstance(e, sc.VotesIn):
            if e.waiting:
                self.out.say(f"{_count(e.waiting, 'block')} of this device still wait for "
                             "votes (valid, not final yet): sync again later")
            else:
                self.out.say("the witness voted: this device's blocks are final")
        elif isinstance(e, sc.Down) and not self.quiet_failures:
            retry = f"; retrying in {e.retry_s:.1f} s" if e.retry_s is not None else ""
            print(f"tally: {e.reason}{retry}", file=sys.stderr, flush=True)
        elif isinstance(e, sc.Problem):
            print(f"tally: {e.reason}", file=sys.stderr, flush=True)


def _run_until_signal(runner: Any, start: Callable[[], Any]) -> Any:
    """Await ``start()`` until it returns or SIGINT/SIGTERM calls ``runner.stop()``."""
    import asyncio
    import contextlib
    import signal

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        sigs = (signal.SIGINT, signal.SIGTERM)
        for sig in sigs:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # e.g. Windows
                loop.add_signal_handler(sig, runner.stop)
        try:
            return await start()
        finally:
            for sig in sigs:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    finally:
        runner.shutdown()


def _claimed_docs(w: Wallet, runner: Any) -> list[dict[str, Any]]:
    return [{"id": id_text(c.block_id), "claims": id_text(c.claims),
             **_money(w, amount=c.amount or 0), "payer": key_text(c.payer),
             "status": c.status} for c in runner.claimed]


def cmd_sync(a: argparse.Namespace, out: Out) -> None:
    """Sync with relays and peers; with --once, until in sync with each."""
    from sync.client import SyncClient, check_url

    relays, peers = a.relay or [], a.peer or []
    w = Wallet.open(a.home)
    given = ({check_url(u): "relay" for u in relays}
             | {check_url(u): "peer" for u in peers if u not in relays})
    if not given:
        known = w.links()
        relays = [u for u, k in known.items() if k == "relay"]
        peers = [u for u, k in known.items() if k == "peer"]
        if not known:
            raise WalletError("nothing to sync with: give --relay URL or --peer URL (they "
                              "are remembered), or `tally relays add URL`")
    client = SyncClient(w, _passphrase(), relays=relays, peers=peers, once=a.once, ca=a.ca,
                        on_event=_SyncPrinter(w, out, quiet_failures=a.once))
    results = _run_until_signal(client, client.run)
    linked = {r.url: given[r.url] for r in results if r.url in given and r.peer_key}
    if linked:  # remembered once they answered: a typo is not kept
        w.remember_links(linked)
    out.put(peers=[r.doc() for r in results], claimed=_claimed_docs(w, client))
    failed = [r for r in results if r.error]
    if a.once and failed:
        raise WalletError("; ".join(r.error or "" for r in failed))


def cmd_relays_add(a: argparse.Namespace, out: Out) -> None:
    """Remember a relay (or with --peer, a peer) that `tally sync` uses."""
    from sync.client import check_url

    w = Wallet.open(a.home)
    url = check_url(a.url)
    known = w.remember_links({url: "peer" if a.peer else "relay"})
    out.put(links=[{"url": u, "kind": k} for u, k in sorted(known.items())])
    out.say(f"remembered {url}; `tally sync` with no URL syncs with "
            f"{_count(len(known), 'relay or peer')}")


def cmd_relays_remove(a: argparse.Namespace, out: Out) -> None:
    """Forget a remembered relay or peer."""
    w = Wallet.open(a.home)
    w.forget_link(a.url)
    out.put(links=[{"url": u, "kind": k} for u, k in sorted(w.links().items())])
    out.say(f"forgot {a.url}")


def cmd_relays_list(a: argparse.Namespace, out: Out) -> None:
    """The relays and peers `tally sync` uses when given none."""
    w = Wallet.open(a.home)
    known = w.links()
    out.put(links=[{"url": u, "kind": k} for u, k in sorted(known.items())])
    for u, k in sorted(known.items()):
        out.say(f"{k:5} {u}")
    if not known:
        out.say("none remembered: `tally relays add URL`, or sync once with --relay URL")


def cmd_serve(a: argparse.Namespace, out: Out) -> None:
    """Listen for peers (a till): payers sync with this wallet directly."""
    from sync.listener import Listener, parse_listen

    host, port = parse_listen(a.listen)
    w = Wallet.open(a.home)
    listener = Listener(w, _passphrase(), host=host, port=port,
                        on_event=_SyncPrinter(w, out, quiet_failures=False))
    results = _run_until_signal(listener, lambda: listener.run(
        ready=lambda url: out.say(f"listening on {url} for network {w.genesis.name}")))
    out.put(listen=listener.url, peers=[r.doc() for r in results],
            claimed=_claimed_docs(w, listener))


def cmd_demo(a: argparse.Namespace, out: Out) -> None:
    """The live demo in the app (in a terminal), or the scripted walk-through."""
    workdir = Path(a.dir) if a.dir else None
    if not (a.script or out.as_json) and sys.stdin.isatty() and sys.stdout.isatty():
        from tui.live_demo import run_live_demo

        run_live_demo(workdir)
        return
    from wallet.demo import run_demo

    run_demo(out, workdir=workdir)


WEB_PORT = 8000  # where `tally web` serves the app by default


def cmd_web(a: argparse.Namespace, out: Out) -> None:
    """Serve the app to browsers (textual-serve): each visitor gets the app on this
    wallet, run as its own ``tally`` process."""
    import shlex

    from textual_serve.server import Server

    from sync.listener import parse_listen

    host, port = parse_listen(a.listen)
    Wallet.open(a.home).close()  # a wallet that is not there is said here, not per visitor
    command = shlex.join([sys.executable, "-m", "tui.cli", "--home", str(a.home)])
    url = f"http://{host}:{port}/"
    out.say(f"serving the app on {url} (ctrl+c stops)")
    if out.as_json:  # said now: the server runs until stopped
        print(json.dumps({"url": url}), flush=True)
    Server(command, host=host, port=port, title="Tallystick").serve()


def cmd_app(a: argparse.Namespace, out: Out) -> None:
    """No sub-command: open the terminal app on this wallet."""
    if out.as_json:
        raise WalletError("the app has no --json: give a command (see `tally --help`)")
    web = os.environ.get("TEXTUAL_DRIVER", "").endswith("WebDriver")  # under `tally web`
    if not web and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise WalletError("the app needs a terminal: run `tally` in one, or give a command "
                          "(see `tally --help`)")
    from tui.app import TallyApp

    if not Wallet.exists(a.home):  # first run: join a network, or the demo
        TallyApp(None, home=a.home).run()
        return
    service = WalletService.open(a.home)
    try:
        TallyApp(service).run()
    finally:
        service.close()


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", type=Path, default=argparse.SUPPRESS,
                        help="wallet directory (default: $TALLY_HOME or the user data dir)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout")
    p = argparse.ArgumentParser(prog="tally", parents=[common],
                                description="Tallystick: an edge-first wallet.")
    p.set_defaults(func=cmd_app)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable, parent: Any = sub, **kw: Any) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, parents=[common], help=func.__doc__, **kw)
        sp.set_defaults(func=func)
        return sp

    sp = add("demo", cmd_demo)
    sp.add_argument("--dir", help="keep the demo's wallets here (default: a temp dir)")
    sp.add_argument("--script", action="store_true",
                    help="the printed walk-through, not the app (also without a terminal)")

    net = sub.add_parser("network", help="create, join or show the network").add_subparsers(
        dest="sub", metavar="SUB", required=True)
    sp = add("create", cmd_network_create, net)
    sp.add_argument("name")
    sp.add_argument("--currency", required=True)
    sp.add_argument("--decimals", type=int, default=2)
    sp.add_argument("--witness", action="append", help="witness public key or key file")
    sp.add_argument("--quorum", type=int)
    sp.add_argument("--floor-payment", default="50")
    sp.add_argument("--floor-account", default="100")
    sp.add_argument("--floor-till", default="1000")
    sp.add_argument("--settle-period", type=int, default=86400, help="seconds (q = 0)")
    sp.add_argument("--out", help="genesis file to write (default: HOME/network.genesis)")
    add("join", cmd_network_join, net).add_argument("file")
    add("show", cmd_network_show, net)

    add("init", cmd_init).add_argument("--label", default="main")
    add("restore", cmd_restore).add_argument("--label", default="restored")
    add("address", cmd_address)
    sp = add("request", cmd_request)
    sp.add_argument("amount")
    sp.add_argument("--memo")
    sp.add_argument("--expires", metavar="T",
                    help="when it expires: a duration (90s, 30m, 2h, 7d) or a local time "
                         "(2026-12-24 18:00, or a date)")
    sp.add_argument("--id", help="request id (hex; default: random)")
    sp.add_argument("--qr", action="store_true",
                    help="also draw the request as a QR code (in --json: qr_text)")
    sp.add_argument("--qr-file", metavar="FILE", help="also write the QR code to FILE.svg/.png")
    sp = add("pay", cmd_pay)
    sp.add_argument("to", metavar="ADDRESS_OR_REQUEST")
    sp.add_argument("amount", nargs="?")
    sp.add_argument("--memo")
    sp.add_argument("--yes", action="store_true",
                    help="do not ask (a payee this wallet does not know yet)")
    sp.add_argument("--again", action="store_true",
                    help="pay a request this account has paid before once more")
    sp = add("issue", cmd_issue)
    sp.add_argument("to", metavar="ADDRESS")
    sp.add_argument("amount")
    sp.add_argument("--yes", action="store_true", help="do not ask")
    add("receive", cmd_receive)
    add("balance", cmd_balance)
    sp = add("history", cmd_history)
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--before", type=int, help="page: the ref (first column) of the last row seen")
    sp.add_argument("--status", choices=STATUS_FILTERS,
                    help="one status (accepted: 'accepted, no witness'), or a group: "
                         "not-final, conflicted (lost or disputed)")
    sp.add_argument("--device", metavar="DEVICE",
                    help="only this device of the account (label, key or its short form)")
    sp.add_argument("--all", action="store_true",
                    help="every device of the account, with the device shown (the default)")
    add("frauds", cmd_frauds)
    sp = add("takings", cmd_takings)
    sp.add_argument("--since", metavar="DATE", help="from this local date (2026-12-01)")
    sp.add_argument("--until", metavar="DATE", help="up to this local date, inclusive")
    sp.add_argument("--status", choices=TAKING_STATES)
    sp.add_argument("--till", metavar="DEVICE",
                    help="one till of this account (label, key or its short form), or "
                         "'all'; by default this device if it is a till, else all")
    sp.add_argument("--csv", metavar="FILE",
                    help="also write the takings as CSV (columns: docs/takings.md)")
    tk = sp.add_subparsers(dest="sub", metavar="SUB")
    add("write-off", cmd_takings_write_off, tk).add_argument("id", metavar="PAYMENT_ID")
    add("close", cmd_takings_close, tk).add_argument(
        "--day", metavar="DATE", help="the local day to close (default: today)")
    till = sub.add_parser("till", help="this device as a till").add_subparsers(
        dest="sub", metavar="SUB", required=True)
    sp = add("limits", cmd_till_limits, till)
    sp.add_argument("--payment", metavar="AMOUNT", help="floor per payment")
    sp.add_argument("--account", metavar="AMOUNT", help="floor per payer account")
    sp.add_argument("--till", metavar="AMOUNT", help="floor for the whole till")
    add("doctor", cmd_doctor)

    dev = sub.add_parser("devices", help="devices of this account").add_subparsers(
        dest="sub", metavar="SUB", required=True)
    add("list", cmd_devices_list, dev)
    sp = add("pair", cmd_devices_pair, dev)
    sp.add_argument("account_address", metavar="ACCOUNT_ADDRESS",
                    help="the address of a device of the account to join (`tally address` there)")
    sp.add_argument("--label", default="device")
    add("add", cmd_devices_add, dev).add_argument("request")
    sp = add("revoke", cmd_devices_revoke, dev)
    sp.add_argument("device")
    sp.add_argument("--to", help="sibling that takes the balance (default: this device)")
    sp = add("refund", cmd_refund)
    sp.add_argument("payment_id", metavar="PAYMENT_ID")
    sp.add_argument("amount", nargs="?", metavar="AMOUNT",
                    help="how much to send back (default: all that is left)")
    sp = add("sweep", cmd_sweep)
    sp.add_argument("--to", metavar="DEVICE",
                    help="the device that takes the takings (default: the only other one)")
    sp = add("move", cmd_move)
    sp.add_argument("amount")
    sp.add_argument("--to", required=True, metavar="DEVICE")

    bun = sub.add_parser("bundle", help="payment bundles (files)").add_subparsers(
        dest="sub", metavar="SUB", required=True)
    sp = add("export", cmd_bundle_export, bun)
    sp.add_argument("file")
    sp.add_argument("--for", dest="for_address", metavar="ADDRESS")
    add("import", cmd_bundle_import, bun).add_argument("file")

    sp = add("sync", cmd_sync)
    sp.add_argument("--relay", action="append", metavar="URL", help="a relay (ws:// or wss://)")
    sp.add_argument("--peer", action="append", metavar="URL", help="a peer, like a till")
    sp.add_argument("--once", action="store_true",
                    help="stop once in sync with each (else run and push new entries live)")
    sp.add_argument("--ca", type=Path, metavar="FILE",
                    help="also trust this certificate (PEM) for wss:// (a self-signed relay)")
    rel = sub.add_parser("relays", help="the relays and peers sync remembers").add_subparsers(
        dest="sub", metavar="SUB", required=True)
    sp = add("add", cmd_relays_add, rel)
    sp.add_argument("url", metavar="URL")
    sp.add_argument("--peer", action="store_true", help="a peer (a till), not a relay")
    add("remove", cmd_relays_remove, rel).add_argument("url", metavar="URL")
    add("list", cmd_relays_list, rel)
    sp = add("web", cmd_web)
    sp.add_argument("--listen", default=f"127.0.0.1:{WEB_PORT}", metavar="HOST:PORT",
                    help=f"where to serve the app (default 127.0.0.1:{WEB_PORT})")
    sp = add("serve", cmd_serve)
    sp.add_argument("--listen", required=True, metavar="HOST:PORT",
                    help="where to accept peers (port 0: any free port)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tally``."""
    given = sys.argv[1:] if argv is None else argv
    # An entry id may start with "-" (base64url): argparse would take it for an option.
    args = build_parser().parse_args(
        [ID_ARG_PREFIX + x if DASHED_ENTRY_ID.match(x) else x for x in given])
    if not hasattr(args, "home"):
        args.home = default_home()
    as_json = getattr(args, "json", False)
    out = Out(as_json)
    try:
        args.func(args, out)
    except KeyboardInterrupt:
        print("tally: interrupted", file=sys.stderr)
        return 130
    except (TallyError, EncodingError, OSError, sqlite3.DatabaseError) as exc:
        if isinstance(exc, OSError):  # a file or directory the command needs: say which
            where = f" ({exc.filename})" if exc.filename else ""
            text = f"{exc.strerror or exc}{where}"
        elif isinstance(exc, sqlite3.DatabaseError):
            text = f"the wallet database in {args.home} is unusable: {exc}"
        else:
            text = error_text(exc)
        print(f"tally: error: {text}", file=sys.stderr)
        if as_json:
            print(json.dumps({"error": text}))
        return 1
    out.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
