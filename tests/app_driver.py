"""Drives the terminal app in its own process, headless, as a person at the keyboard.

``python -m tests.app_driver --home H --funds 50.00 --to ADDRESS --pay 12.50
--expect 3.00`` (from the repository root, in ``tests.clikit.tally_env``) opens
``TallyApp`` over the wallet at ``H`` with Textual's Pilot and:

1. waits until Home says the wallet is in sync with its relay and shows enough
   spendable money to pay;
2. presses ``p``, types the address and the amount key by key, Enter, ``y``, and
   watches the Pay screen's status until it reads *final*;
3. goes back to Home and waits for the payment of ``--expect`` from elsewhere: its
   notification, then Home's spendable money rising to funds − paid + expected with
   nothing left incoming or to claim (spendable money is final credit), then (pressing
   ``h``, as often as needed) History showing the receive that claims it with its
   credit final, and this side's own payment, *final*.

It prints one JSON line of what it saw (statuses, notifications, Home's figures, the
history lines) and exits 0; past ``--timeout`` seconds it prints the same line with an
``error`` and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from tui.app import TallyApp
from tui.screens.history import HistoryScreen, HistoryView
from tui.screens.home import HomeScreen
from tui.screens.modals import ConfirmScreen
from tui.screens.pay import PayScreen
from tui.service import WalletService

POLL_S = 0.05
"""How often a wait looks at the screen again."""


class Stuck(Exception):
    """A wait ran out of time: what was awaited."""


class Driver:
    """One app and its pilot, with what was seen on screen so far."""

    def __init__(self, app: TallyApp, pilot: Pilot[Any], deadline: float) -> None:
        self.app = app
        self.pilot = pilot
        self.deadline = deadline
        self.seen: dict[str, Any] = {"notifications": [], "pay_statuses": [],
                                     "home_timeline": []}
        self._notified: set[str] = set()

    # ------------------------------------------------------------- reading
    def text(self, selector: str) -> str:
        """The plain text of a ``Static`` on the screen on top."""
        return str(self.app.screen.query_one(selector, Static).render())

    def home(self) -> HomeScreen:
        """The Home screen (at the bottom of the stack)."""
        return next(s for s in self.app.screen_stack if isinstance(s, HomeScreen))

    def home_figures(self) -> tuple[int, int] | None:
        """Spendable and incoming as Home shows them, in minor units (None when they
        cannot be read)."""
        svc = self.app.service
        cur = re.escape(svc.wallet.genesis.currency)
        account = str(self.home().query_one("#account", Static).render())
        m = re.search(rf"(-?[\d.]+) {cur} spendable\s+(-?[\d.]+) {cur} incoming", account)
        if m is None:
            return None
        scale = 10 ** svc.wallet.genesis.decimals
        return (int(Decimal(m.group(1)) * scale), int(Decimal(m.group(2)) * scale))

    def device_rows(self) -> list[list[str]]:
        """Home's devices table, as shown: device, label, spendable, incoming, to claim."""
        table = self.home().query_one("#devices", DataTable)
        return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]

    def home_snapshot(self) -> dict[str, Any]:
        """What Home shows now."""
        h = self.home()
        figures = self.home_figures()
        return {"account": str(h.query_one("#account", Static).render()),
                "links": str(h.query_one("#links", Static).render()),
                "devices": self.device_rows(),
                "spendable_minor": figures[0] if figures else None,
                "incoming_minor": figures[1] if figures else None}

    def _watch(self) -> None:
        """Note every notification shown, every status the Pay screen shows, and each
        change of Home's spendable, incoming and to-claim figures."""
        figures = self.home_figures()
        if figures is not None:
            now = [*figures, [r[4] for r in self.device_rows()]]
            timeline = self.seen["home_timeline"]
            if not timeline or timeline[-1] != now:
                timeline.append(now)
        for n in list(self.app._notifications):
            if n.identity not in self._notified:
                self._notified.add(n.identity)
                self.seen["notifications"].append(n.message)
        screen = self.app.screen
        if isinstance(screen, PayScreen) and screen.paid is not None:
            status = str(screen.query_one("#status", Static).render())
            if status and status not in self.seen["pay_statuses"]:
                self.seen["pay_statuses"].append(status)

    async def until(self, done: Callable[[], bool], what: str) -> None:
        """Look at the screen until ``done()``; ``Stuck`` past the deadline."""
        while True:
            await self.pilot.pause()
            self._watch()
            if done():
                return
            if time.monotonic() > self.deadline:
                raise Stuck(f"timed out waiting for {what}")
            await asyncio.sleep(POLL_S)

    async def press(self, *keys: str) -> None:
        """Press keys, noting what the screen showed."""
        await self.pilot.press(*keys)
        self._watch()

    # ------------------------------------------------------------- acting
    async def pay(self, to: str, amount: str) -> None:
        """Pay ``amount`` to the address ``to`` with the Pay form; wait until final."""
        svc = self.app.service
        minor = svc.amount(amount)

        def ready() -> bool:
            figures = self.home_figures()
            return ("in sync" in str(self.home().query_one("#links", Static).render())
                    and figures is not None and figures[0] >= minor)

        await self.until(lambda: isinstance(self.app.screen, HomeScreen) and ready(),
                         f"Home in sync with {amount} spendable")
        self.seen["home_before"] = self.home_snapshot()
        await self.press("p")
        await self.until(lambda: isinstance(self.app.screen, PayScreen)
                         and isinstance(self.app.focused, Input)
                         and self.app.focused.id == "to", "the Pay form, on To")
        pay = self.app.screen
        assert isinstance(pay, PayScreen)
        await self.press(*to)
        await self.press("tab", *amount, "enter")
        await self.until(lambda: isinstance(self.app.screen, ConfirmScreen)
                         or bool(self.text_of(pay, "#problem")),
                         "the confirmation")
        if not isinstance(self.app.screen, ConfirmScreen):
            raise Stuck(f"the Pay form refused: {self.text_of(pay, '#problem')}")
        self.seen["question"] = self.app.screen.question
        await self.press("y")
        await self.until(lambda: pay.paid is not None or bool(self.text_of(pay, "#problem")),
                         "the payment signed")
        if pay.paid is None:
            raise Stuck(f"the payment failed: {self.text_of(pay, '#problem')}")
        self.seen["paid_final"] = False
        await self.until(lambda: self.text_of(pay, "#status").rstrip().endswith(": final"),
                         "the payment's status final on the Pay screen")
        self.seen["paid_final"] = True
        await self.press("escape")
        await self.until(lambda: isinstance(self.app.screen, HomeScreen), "Home again")

    @staticmethod
    def text_of(screen: Any, selector: str) -> str:
        """The plain text of a ``Static`` on ``screen``."""
        return str(screen.query_one(selector, Static).render())

    async def expect(self, amount: str, funds: str, paid: str) -> None:
        """Wait until a payment of ``amount`` from elsewhere arrived and its credit is
        final: its notification, then Home showing nothing incoming or to claim and
        ``funds - paid + amount`` spendable; then History showing the receive that
        claims it, and this side's payment, final."""
        svc = self.app.service
        money = svc.money(svc.amount(amount))
        arrived = re.compile(re.escape(f"{money} arrived from ") + r"(\S+)…")
        want = svc.amount(funds) - svc.amount(paid) + svc.amount(amount)
        self.seen["expected_spendable_minor"] = want
        zero = svc.money(0)
        self.seen["arrived_final"] = False

        def settled() -> bool:
            return (any(arrived.search(m) for m in self.seen["notifications"])
                    and self.home_figures() == (want, 0)
                    and all(r[4] == zero for r in self.device_rows()))

        await self.until(settled, f"the notification of {money} arriving, then "
                                  f"{svc.money(want)} spendable, nothing incoming or to "
                                  "claim on Home")
        payer = next(m.group(1) for m in map(arrived.search, self.seen["notifications"])
                     if m is not None)
        claim = f"receive  +{money} from {payer}…"  # its status column: its credit
        sent = f"-{svc.money(svc.amount(paid))} to"
        while True:  # History is read when it opens: open it until both read final
            await self.press("h")
            await self.until(lambda: isinstance(self.app.screen, HistoryScreen),
                             "the History screen")
            view = self.app.screen.query_one(HistoryView)
            await self.until(lambda v=view: v.rows != [] or v.done,  # type: ignore[misc]
                             "the history read")
            await self.pilot.pause()
            lines = [view.render_line(y).text.rstrip() for y in range(view.size.height)]
            self.seen["history"] = [ln for ln in lines if ln]
            await self.press("escape")
            await self.until(lambda: isinstance(self.app.screen, HomeScreen), "Home again")
            if all(any(what in ln and ln.endswith(" final") for ln in lines)
                   for what in (claim, sent)):
                break
            if time.monotonic() > self.deadline:
                raise Stuck(f"timed out waiting for History to show {claim!r} and "
                            f"{sent!r} final")
            await asyncio.sleep(0.2)
        self.seen["arrived_final"] = True
        self.seen["home_after"] = self.home_snapshot()


async def drive(home: Path, to: str, pay: str, expect: str, funds: str,
                timeout_s: float) -> tuple[dict[str, Any], str | None]:
    """Run the app over ``home``; what was seen, and the error if it got stuck."""
    start = time.monotonic()
    app = TallyApp(WalletService.open(home))
    error: str | None = None
    seen: dict[str, Any] = {}
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            d = Driver(app, pilot, start + timeout_s)
            seen = d.seen
            try:
                await d.pay(to, pay)
                await d.expect(expect, funds, pay)
            except Stuck as exc:
                error = str(exc)
                seen["screen"] = type(app.screen).__name__
                seen["home_at_error"] = d.home_snapshot()
            await pilot.press("q")
    finally:
        app.service.close()
    seen["elapsed_s"] = round(time.monotonic() - start, 2)
    return seen, error


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, drive the app, print one JSON line; the exit status."""
    ap = argparse.ArgumentParser(prog="python -m tests.app_driver", description=__doc__)
    ap.add_argument("--home", type=Path, required=True, help="the wallet home")
    ap.add_argument("--to", required=True, help="the address to pay")
    ap.add_argument("--pay", required=True, help="the amount to pay, as typed (12.50)")
    ap.add_argument("--expect", required=True,
                    help="the amount of the payment from elsewhere to wait for")
    ap.add_argument("--funds", required=True,
                    help="what this wallet was funded with: its spendable money before")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds, at most")
    a = ap.parse_args(argv)
    try:
        seen, error = asyncio.run(asyncio.wait_for(
            drive(a.home, a.to, a.pay, a.expect, a.funds, a.timeout), a.timeout + 15))
    except TimeoutError:
        seen, error = {}, f"the app did not close within {a.timeout + 15} s"
    if error is not None:
        seen["error"] = error
    print(json.dumps(seen), flush=True)
    if error is not None:
        print(f"app_driver {a.home}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
