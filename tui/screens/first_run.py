"""First run: a home with no wallet joins a network (or starts the demo); a wallet
with no device creates an account, restores one from its recovery phrase, or pairs
with a device of an account the person already has.

A new account's recovery phrase is shown once, then the person types back three of
its words, picked at random, before anything is stored: a phrase nobody wrote down
restores nothing.
"""

from __future__ import annotations

import secrets
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tui.screens.modals import AskScreen
from tui.service import (
    WalletService,
    join_network,
    new_recovery_phrase,
    passphrase_in_env,
)
from wallet import keys as keyfiles
from wallet.errors import TallyError

PHRASE_WORDS_CHECKED = 3
"""How many words of a new recovery phrase the person types back."""

CHOICES = {
    "join": "Join a network (from its genesis file)",
    "demo": "Start the demo: a live little network on this machine",
    "create": "Create a new account (a recovery phrase to write down)",
    "restore": "Restore an account from its recovery phrase (as a new device)",
    "pair": "Pair with a device of an account I already have",
}


class WelcomeScreen(Screen):
    """What first run offers, for where this home stands."""

    CSS_PATH = "first_run.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("enter", "choose", "Choose"),
        Binding("q", "app.quit", "Quit"),
    ]

    def action_choose(self) -> None:
        """Enter: the highlighted choice (the list takes Enter itself when focused)."""
        self.query_one("#choices", OptionList).action_select()

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="welcome"):
            yield Static(id="intro")
            yield OptionList(id="choices")
            yield Static(id="problem", classes="problem")
        yield Footer()

    def on_mount(self) -> None:
        self.show_choices()

    def show_choices(self) -> None:
        """The choices for this home: join or demo before a wallet exists; create,
        restore or pair once it is on a network."""
        svc: WalletService | None = self.app.service  # type: ignore[attr-defined]
        if svc is None:
            intro = (f"[b]Welcome to Tallystick.[/b]\nThere is no wallet in "
                     f"{self.app.home} yet.")  # type: ignore[attr-defined]
            keys = ["join", "demo"]
        else:
            g = svc.wallet.genesis
            intro = (f"[b]This wallet is on {g.name}[/b] ({g.currency}). It has no "
                     "account yet.")
            keys = ["create", "restore", "pair", "demo"]
        self.query_one("#intro", Static).update(intro)
        options = self.query_one("#choices", OptionList)
        options.clear_options()
        options.add_options([Option(CHOICES[k], id=k) for k in keys])
        options.highlighted = 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Enter (or a click) on a choice."""
        choice = event.option.id
        self.query_one("#problem", Static).update("")
        if choice == "join":
            self.app.push_screen(AskScreen("The network's genesis file (its path):",
                                           placeholder="~/Downloads/network.genesis"),
                                 self._join)
        elif choice == "demo":
            self.app.start_demo()  # type: ignore[attr-defined]
        elif choice in ("create", "restore", "pair"):
            self.app.push_screen(AccountFormScreen(choice))

    def _join(self, path: str | None) -> None:
        if not path:
            return
        try:
            wallet = join_network(self.app.home, path)  # type: ignore[attr-defined]
        except TallyError as exc:
            self.query_one("#problem", Static).update(str(exc))
            return
        self.app.attach(WalletService(wallet), owned=True)  # type: ignore[attr-defined]
        self.app.notify(f"joined {wallet.genesis.name}")
        self.show_choices()


class AccountFormScreen(Screen):
    """The form of one way to get an account: ``create``, ``restore`` or ``pair``."""

    CSS_PATH = "first_run.tcss"
    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, mode: str) -> None:
        super().__init__()
        assert mode in ("create", "restore", "pair"), mode
        self.mode = mode

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form"):
            yield Static(f"[b]{CHOICES[self.mode]}[/b]")
            if self.mode == "restore":
                yield Label("Recovery phrase (24 words)")
                yield Input(placeholder="abandon ability able …", id="phrase")
            if self.mode == "pair":
                yield Label("The address of a device of the account (its `tally address`)")
                yield Input(placeholder="tly2…", id="account")
            yield Label("A name for this device")
            yield Input(value="phone" if self.mode != "restore" else "restored", id="label")
            if not passphrase_in_env():
                yield Label("A passphrase to lock this wallet's keys")
                yield Input(password=True, id="passphrase")
                yield Label("The passphrase again")
                yield Input(password=True, id="again")
            yield Static(id="problem", classes="problem")
        yield Footer()

    def on_mount(self) -> None:
        self.query(Input).first().focus()

    def _value(self, name: str) -> str:
        found = self.query(f"#{name}")
        return found.first(Input).value.strip() if found else ""

    def _say(self, text: str) -> None:
        self.query_one("#problem", Static).update(text)

    def _passphrase(self) -> str | None:
        if passphrase_in_env():
            return keyfiles.passphrase_from_env()
        phrase = self.query_one("#passphrase", Input).value
        if not phrase:
            self._say("choose a passphrase: it locks the keys on this machine")
            return None
        if phrase != self.query_one("#again", Input).value:
            self._say("the two passphrases differ: type the same one twice")
            return None
        return phrase

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter, in any field: check the form and go on."""
        label = self._value("label") or "phone"
        passphrase = self._passphrase()
        if passphrase is None:
            return
        if self.mode == "create":
            self.app.push_screen(PhraseScreen(new_recovery_phrase(), passphrase, label))
        elif self.mode == "restore":
            if not self._value("phrase"):
                self._say("type the 24 words of the recovery phrase")
                return
            self._say("restoring…")
            self._start(self._value("phrase"), passphrase, label)
        else:
            if not self._value("account"):
                self._say("paste the address of a device of your account")
                return
            self._say("making this device's key…")
            self._pair(self._value("account"), passphrase, label)

    @work(thread=True, exclusive=True)
    def _start(self, phrase: str, passphrase: str, label: str) -> None:
        svc = self.app.service  # type: ignore[attr-defined]
        try:
            svc.create_account(phrase, passphrase, label)
        except TallyError as exc:
            self.app.call_from_thread(self._say, str(exc))
            return
        self.app.call_from_thread(self.app.open_home)  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True)
    def _pair(self, account: str, passphrase: str, label: str) -> None:
        svc = self.app.service  # type: ignore[attr-defined]
        try:
            text = svc.pair_request(account, passphrase, label)
        except TallyError as exc:
            self.app.call_from_thread(self._say, str(exc))
            return
        self.app.call_from_thread(self.app.push_screen, PairRequestScreen(text))


class PhraseScreen(Screen):
    """A new account's recovery phrase, shown once; then three of its words typed
    back before the account is made."""

    CSS_PATH = "first_run.tcss"
    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "back", "Back")]

    def __init__(self, phrase: str, passphrase: str, label: str) -> None:
        super().__init__()
        self.phrase = phrase
        self._passphrase = passphrase
        self._label = label
        words = phrase.split()
        self.asked = sorted(secrets.SystemRandom().sample(range(len(words)),
                                                          PHRASE_WORDS_CHECKED))
        self.confirmed = False

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form"):
            yield Static(id="words")
            with Vertical(id="check"):
                for i in self.asked:
                    yield Label(f"Word {i + 1}")
                    yield Input(id=f"word{i}")
            yield Static(id="problem", classes="problem")
        yield Footer()

    def on_mount(self) -> None:
        self.action_back()

    def action_back(self) -> None:
        """Show the words (again): nothing is stored yet."""
        words = self.phrase.split()
        cols = [f"{i + 1:>2}. {w:<10}" for i, w in enumerate(words)]
        grid = "\n".join("  ".join(cols[r::6]) for r in range(6))
        self.query_one("#words", Static).update(
            "[b]Your recovery phrase.[/b] Write these 24 words down, in order, and keep "
            "them safe: they restore this account on a new device. They are shown only "
            "now.\n\n" + grid + "\n\nWritten down? Press [b]Enter[/b].")
        self.query_one("#words").display = True
        self.query_one("#check").display = False
        self.set_focus(None)

    def key_enter(self) -> None:
        """Enter on the words: hide them and ask for three."""
        if self.query_one("#words").display:
            self.query_one("#words").display = False
            self.query_one("#check").display = True
            self.query_one(f"#word{self.asked[0]}", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the words typed back: check them all."""
        words = self.phrase.split()
        for i in self.asked:
            typed = self.query_one(f"#word{i}", Input).value.strip().lower()
            if typed != words[i]:
                self.query_one("#problem", Static).update(
                    f"word {i + 1} is not {typed or 'empty'}: check what you wrote down "
                    "(Escape shows the phrase again)")
                return
        self.query_one("#problem", Static).update("making the account…")
        self._create()

    @work(thread=True, exclusive=True)
    def _create(self) -> None:
        svc = self.app.service  # type: ignore[attr-defined]
        try:
            svc.create_account(self.phrase, self._passphrase, self._label)
        except TallyError as exc:
            self.app.call_from_thread(self.query_one("#problem", Static).update, str(exc))
            return
        self.confirmed = True
        self.app.call_from_thread(self.app.open_home)  # type: ignore[attr-defined]


class PairRequestScreen(Screen):
    """This device's pairing request, as text and a QR code, for the account key's
    holder to add (its Devices screen, ``a``)."""

    CSS_PATH = "first_run.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("enter", "done", "Done"),
        Binding("c", "copy", "Copy the request"),
    ]

    def __init__(self, request_text: str) -> None:
        super().__init__()
        self.request_text = request_text

    def compose(self) -> ComposeResult:
        svc = self.app.service  # type: ignore[attr-defined]
        yield Header()
        with VerticalScroll(id="form"):
            yield Static("[b]Pairing request.[/b] On the device that holds the account key, "
                         "open Devices, press [b]a[/b] and paste this (or scan the code). "
                         "Its answer reaches this device when both sync.")
            yield Static(self.request_text, id="request")
            yield Static(svc.qr_text(self.request_text), id="qr")
        yield Footer()

    def action_copy(self) -> None:
        """Copy the request (to paste it on the other device)."""
        self.app.copy_to_clipboard(self.request_text)
        self.app.notify("pairing request copied")

    def action_done(self) -> None:
        """Go to Home: the device waits there for its open."""
        self.app.open_home()  # type: ignore[attr-defined]
