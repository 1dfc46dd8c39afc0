"""``tally sync`` and ``tally serve`` in real processes on loopback (DESIGN §5, §6, §9).

A till runs ``tally serve``; payers run ``tally sync --peer`` against it. Checked: a
payment reaches the till and is claimed there without a manual step, on a network
without witnesses (q = 0: final at once) and on one with a witness that is not running
(q = 1: no votes, so statuses stay valid, never final); work done offline goes out once the till
comes up (backoff reconnect), and a payment signed by another process while sync runs
goes out live; an unreachable URL, a bad URL and a till of another network fail with a
message a person can act on.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from websockets.exceptions import ConnectionClosedOK

from sync.client import (
    Claimed,
    PeerResult,
    Progress,
    SyncClient,
    Synced,
    SyncEvent,
    backoff_s,
    os_reason,
)
from sync.errors import CloseCode
from sync.listener import Listener
from sync.messages import ROLE_NODE, Close, decode
from sync.protocol import Closed, Connection, Event
from sync.transport import Link, LinkDown
from tests.clikit import (
    PASSPHRASE,
    Home,
    api_fund,
    api_wallets,
    check_ok,
    command,
    fail,
    one_json,
    run,
    store_snapshot,
    tally_env,
    tj,
)
from tests.ledgerkit import Net as LedgerNet
from tests.test_relay import PASSPHRASE as RELAY_PASSPHRASE
from tests.test_relay import self_signed, start_relay
from tests.test_sync_protocol import connect, port_with, world
from tui.cli import main as cli_main
from wallet import keys as keyfiles
from wallet.address import parse_address
from wallet.encoding import Block, key_text
from wallet.errors import WalletError
from wallet.ledger import ACCEPTED_WORD
from wallet.wallet import Wallet

WAIT_S = 15.0


@dataclass
class Net:
    """A network: its issuer home and genesis file, a payer and a till."""

    issuer: Path
    genesis: Path
    payer: Path
    payer_address: str
    till: Path
    till_address: str
    quorum: int


def make_net(tmp: Path, *, witness: bool, witness_key: SigningKey | None = None) -> Net:
    """A network (with one witness, if ``witness``: nobody votes unless a relay holds its
    key), a payer and a till."""
    issuer = tmp / "issuer"
    wkey = witness_key or SigningKey.generate()
    extra = ["--witness", key_text(bytes(wkey.verify_key))] if witness else []
    doc = tj(issuer, "network", "create", "Market", "--currency", "EUR", *extra)
    genesis = issuer / "network.genesis"
    payer, till = api_wallets(genesis, tmp / "payer", tmp / "till")
    return Net(issuer, genesis, payer.path, payer.address, till.path, till.address,
               doc["quorum"])


def free_port() -> int:
    """A TCP port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A long-running ``tally`` process (serve, or sync without --once)."""

    def __init__(self, home: Path, *args: Any) -> None:
        self.p = subprocess.Popen(command(home, *args), env=tally_env(),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

    def first_line(self) -> str:
        """The first line it prints (serve: where it listens)."""
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        assert line, f"exited {self.p.wait()}: {self.p.stderr.read() if self.p.stderr else ''}"
        return line

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, then its exit status and what it printed."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        out, err = self.p.communicate(timeout=WAIT_S)
        return self.p.returncode, out, err

    def kill(self) -> None:
        """Make sure it is gone (a failed test)."""
        if self.p.poll() is None:
            self.p.kill()
            self.p.communicate()


def serve(procs: list[Proc], till: Path, listen: str = "127.0.0.1:0") -> tuple[Proc, str]:
    """Start ``tally serve`` on a till; the process and its URL."""
    p = Proc(till, "serve", "--listen", listen)
    procs.append(p)
    line = p.first_line()
    assert line.startswith("listening on ws://127.0.0.1:"), line
    return p, line.split()[2]


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` until it returns something true, or fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def receipts(home: Path) -> list[dict[str, Any]]:
    """The receive blocks in a wallet's history."""
    return [r for r in tj(home, "history")["history"] if r["kind"] == "receive"]


def holdings(home: Path) -> int:
    """What the wallet's device holds: spendable plus incoming, in minor units."""
    bal = tj(home, "balance")
    return bal["spendable_minor"] + bal["incoming_minor"]


def same_entries(a: Path, b: Path) -> bool:
    """Both stores hold the same set of entries."""
    sa, sb = store_snapshot(a), store_snapshot(b)
    return sa["entries"] == sb["entries"] and sa["bodies"] == sb["bodies"]


@pytest.mark.parametrize("witness", [False, True], ids=["q0", "q1"])
def test_payer_syncs_with_till_which_claims(tmp_path: Path, procs: list[Proc],
                                            witness: bool) -> None:
    net = make_net(tmp_path, witness=witness)
    assert net.quorum == (1 if witness else 0)
    if witness:
        # No witness votes, so nothing turns final and a payer cannot spend what it
        # was issued: the issuing device pays the till itself.
        payer = net.issuer
        tj(payer, "issue", "--yes", net.till_address, "12.50")
    else:
        payer = net.payer
        api_fund(net.issuer, Home(net.payer, net.payer_address), 5000)
        tj(payer, "pay", "--yes", net.till_address, "12.50")
    _, url = serve(procs, net.till)

    doc = tj(payer, "sync", "--peer", url, "--once")
    [peer] = doc["peers"]
    assert peer["in_sync"] and peer["error"] is None and peer["url"] == url
    assert peer["peer"] == tj(net.till, "address")["device"]

    # The till claimed the payment by itself.
    [got] = wait_for("the till's claim", lambda: receipts(net.till))
    # q = 0: accepted at once, never final; q = 1 without a running witness: valid.
    expected = "valid" if witness else ACCEPTED_WORD
    assert got["amount_minor"] == 1250 and got["status"] == expected
    assert holdings(net.till) == 1250
    assert tj(net.till, "balance")["spendable_minor"] == (0 if witness else 1250)

    # The claim goes back to the payer on its next sync (it is the till's new entry).
    doc = tj(payer, "sync", "--peer", url, "--once")
    assert doc["peers"][0]["in_sync"]
    assert same_entries(payer, net.till)
    # A second sync resumes from the till's cursor and changes nothing.
    snap = store_snapshot(payer)["bodies"]
    assert tj(payer, "sync", "--peer", url, "--once")["peers"][0]["received"] == 0
    assert store_snapshot(payer)["bodies"] == snap


def test_offline_work_goes_out_when_the_till_comes_up(tmp_path: Path,
                                                      procs: list[Proc]) -> None:
    net = make_net(tmp_path, witness=False)
    api_fund(net.issuer, Home(net.payer, net.payer_address), 5000)
    tj(net.payer, "pay", "--yes", net.till_address, "3.00")  # offline: no till yet
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    syncer = Proc(net.payer, "sync", "--peer", url)
    procs.append(syncer)
    time.sleep(1.0)  # it tries, fails and backs off
    assert syncer.p.poll() is None
    till, _ = serve(procs, net.till, f"127.0.0.1:{port}")

    wait_for("the offline payment at the till", lambda: holdings(net.till) == 300)
    # Signed by another process while sync runs: goes out live, and is claimed.
    tj(net.payer, "pay", "--yes", net.till_address, "1.25")
    wait_for("the live payment at the till", lambda: holdings(net.till) == 425)
    assert len(receipts(net.till)) == 2
    # The till's claims come back to the payer live.
    wait_for("the till's claims at the payer", lambda: same_entries(net.payer, net.till))

    # The till goes down (a clean stop); a payment made meanwhile goes out on return.
    code, _, err = till.stop()
    assert code == 0, err
    tj(net.payer, "pay", "--yes", net.till_address, "0.75")
    serve(procs, net.till, f"127.0.0.1:{port}")
    wait_for("the payment made while the till was down", lambda: holdings(net.till) == 500)
    wait_for("the third claim at the payer", lambda: same_entries(net.payer, net.till))

    code, out, err = syncer.stop()
    assert code == 0, err
    assert out.count(f"connected to {url}") == 2 and f"in sync with {url}" in out, (out, err)
    assert f"{url} refused: shutdown: stopping; retrying in" in err, err
    assert f"cannot reach {url}: connection refused; retrying in" in err, err


def refused_here(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> str:
    """A command refused in this process (the cheap checks): its message."""
    assert cli_main(["--home", str(home), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tally: error: ") and err.count("\n") == 1, err
    return err[len("tally: error: ") : -1]


def test_once_fails_clearly(tmp_path: Path, procs: list[Proc],
                            capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net(tmp_path, witness=False)
    url = f"ws://127.0.0.1:{free_port()}"
    msg = fail(net.payer, "sync", "--peer", url, "--once")
    assert msg.startswith(f"cannot reach {url}: "), msg
    monkeypatch.setenv("TALLY_PASSPHRASE", PASSPHRASE)
    assert url in refused_here(capsys, net.payer, "sync", "--peer", url, "--once")
    assert "not a websocket URL" in refused_here(capsys, net.payer, "sync", "--peer",
                                                 "http://x", "--once")
    assert "give --relay URL or --peer URL" in refused_here(capsys, net.payer, "sync")
    assert "HOST:PORT" in refused_here(capsys, net.till, "serve", "--listen", "nowhere")

    # A till of another network refuses, and says why.
    other = make_net(tmp_path / "other", witness=False)
    _, till_url = serve(procs, other.till)
    msg = fail(net.payer, "sync", "--peer", till_url, "--once")
    assert msg.startswith(f"{till_url} refused: wrong network: "), msg

    # A port in use cannot be listened on.
    busy = till_url.rsplit(":", 1)[1]
    p = run(net.till, "serve", "--listen", f"127.0.0.1:{busy}")
    assert p.returncode == 1 and "cannot listen on 127.0.0.1:" in p.stderr, p.stderr


def test_serve_stops_cleanly_with_a_summary(tmp_path: Path, procs: list[Proc]) -> None:
    net = make_net(tmp_path, witness=False)
    p = Proc(net.till, "serve", "--listen", "127.0.0.1:0", "--json")
    procs.append(p)
    time.sleep(1.5)
    code, out, err = p.stop()
    assert code == 0, err
    doc = one_json(out)
    assert doc["listen"].startswith("ws://127.0.0.1:") and doc["peers"] == []
    check_ok(subprocess.CompletedProcess([], 0, out, ""))
    assert os.path.exists(net.till / "wallet.db")


def test_through_a_witnessing_relay_payments_turn_final(tmp_path: Path,
                                                        procs: list[Proc]) -> None:
    wkey = SigningKey.generate()
    key_file = tmp_path / "witness.key"
    keyfiles.save_key(key_file, wkey, RELAY_PASSPHRASE, kind="witness",
                      limits=keyfiles.FAST_INSECURE)
    net = make_net(tmp_path, witness=True, witness_key=wkey)
    relay = start_relay(tmp_path, "--network", net.genesis, "--witness-key", key_file)
    try:
        tj(net.issuer, "issue", "--yes", net.payer_address, "20.00")
        doc = tj(net.issuer, "sync", "--relay", relay.url, "--once")
        assert doc["peers"][0]["in_sync"]
        # Both stay connected: the payer claims the issue by itself, the witness votes.
        for home in (net.payer, net.till):
            procs.append(Proc(home, "sync", "--relay", relay.url))
        wait_for("the issue claimed and final at the payer",
                 lambda: tj(net.payer, "balance")["spendable_minor"] == 2000)
        tj(net.payer, "pay", "--yes", net.till_address, "12.50")  # goes out live
        wait_for("the payment claimed and final at the till",
                 lambda: tj(net.till, "balance")["spendable_minor"] == 1250)
        [got] = receipts(net.till)
        assert got["status"] == "final" and got["amount_minor"] == 1250
        wait_for("the payer's send final",
                 lambda: tj(net.payer, "balance")["spendable_minor"] == 750)
        for p in procs:
            code, out, err = p.stop()
            assert code == 0, err
            assert f"in sync with {relay.url}" in out
    finally:
        assert relay.stop() == 0


def test_a_till_takes_a_payment_offline_and_it_turns_final_at_the_relay(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """No relay reachable: the till takes the payment over ``tally serve``; once both
    reach the witnessing relay it turns final. Then a new device's first sync."""
    wkey = SigningKey.generate()
    key_file = tmp_path / "witness.key"
    keyfiles.save_key(key_file, wkey, RELAY_PASSPHRASE, kind="witness",
                      limits=keyfiles.FAST_INSECURE)
    net = make_net(tmp_path, witness=True, witness_key=wkey)
    relay_url = f"ws://127.0.0.1:{free_port()}"  # nothing listens there yet
    msg = fail(net.issuer, "sync", "--relay", relay_url, "--once")
    assert msg.startswith(f"cannot reach {relay_url}: "), msg  # no relay reachable
    tj(net.issuer, "issue", "--yes", net.till_address, "7.00")  # the mint pays the till directly
    till, till_url = serve(procs, net.till)
    assert tj(net.issuer, "sync", "--peer", till_url, "--once")["peers"][0]["in_sync"]
    [got] = wait_for("the till's claim", lambda: receipts(net.till))
    assert got["status"] == "valid" and got["amount_minor"] == 700  # taken, not final yet
    code, _, err = till.stop()
    assert code == 0, err

    relay = start_relay(tmp_path, "--network", net.genesis, "--witness-key", key_file)
    try:
        for home in (net.issuer, net.till):
            assert tj(home, "sync", "--relay", relay.url, "--once")["peers"][0]["in_sync"]
        wait_for("the till's receipt final", lambda: tj(
            net.till, "sync", "--relay", relay.url, "--once") and receipts(
            net.till)[0]["status"] == "final")
        assert tj(net.till, "balance")["spendable_minor"] == 700
        # a new device joins the network and makes its first sync through the relay
        newcomer = tmp_path / "newcomer"
        tj(newcomer, "network", "join", net.genesis)
        tj(newcomer, "init", "--label", "phone")
        doc = tj(newcomer, "sync", "--relay", relay.url, "--once")
        [peer] = doc["peers"]
        assert peer["in_sync"] and peer["received"] >= 6, doc
        # the witness votes the newcomer's open once it arrives: the next sync brings it
        wait_for("the newcomer holding all the relay holds", lambda: tj(
            newcomer, "sync", "--relay", relay.url, "--once") and store_snapshot(
            newcomer)["entries"] == relay.health()["entries"])
    finally:
        assert relay.stop() == 0


def test_a_relay_restarted_in_the_middle_of_a_sync(tmp_path: Path, procs: list[Proc]) -> None:
    """Continuous syncs ride out a relay restart: they reconnect by themselves, what was
    made while it was down goes out, and the payment turns final."""
    wkey = SigningKey.generate()
    key_file = tmp_path / "witness.key"
    keyfiles.save_key(key_file, wkey, RELAY_PASSPHRASE, kind="witness",
                      limits=keyfiles.FAST_INSECURE)
    net = make_net(tmp_path, witness=True, witness_key=wkey)
    listen = f"127.0.0.1:{free_port()}"
    args = ("--network", net.genesis, "--witness-key", key_file)
    relay = start_relay(tmp_path, *args, listen=listen)
    try:
        tj(net.issuer, "issue", "--yes", net.payer_address, "20.00")
        for home in (net.issuer, net.payer, net.till):
            procs.append(Proc(home, "sync", "--relay", relay.url))
        wait_for("the issue claimed and final at the payer",
                 lambda: tj(net.payer, "balance")["spendable_minor"] == 2000)
        assert relay.stop() == 0  # mid-conversation: every client is told SHUTDOWN
        tj(net.payer, "pay", "--yes", net.till_address, "5.00")  # made while the relay is down
        relay = start_relay(tmp_path, *args, listen=listen, db=relay.db)
        wait_for("the payment claimed and final at the till after the restart",
                 lambda: tj(net.till, "balance")["spendable_minor"] == 500)
        wait_for("the payer's send final",
                 lambda: tj(net.payer, "balance")["spendable_minor"] == 1500)
        for i, p in enumerate(procs):
            code, out, err = p.stop()
            assert code == 0, err
            assert "the relay is stopping" in err, err  # each said why it lost the link
            if i > 0:  # the payer and the till had to reconnect by themselves
                assert out.count("connected to") >= 2, out
    finally:
        relay.stop()


# ------------------------------------------------------- in process: plumbing and events
def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        ceiling = min(30.0, 0.2 * 2 ** attempt)
        draws = [backoff_s(attempt, rng=rng) for _ in range(50)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling / 2  # full jitter spreads over the whole range
    assert backoff_s(1000, base_s=1, cap_s=5, rng=rng) <= 5


class FakeSocket:
    """A websocket whose writes wait for ``gate`` and whose reads are scripted."""

    def __init__(self, inbound: list[bytes | str] | None = None) -> None:
        self.inbound = list(inbound or [])
        self.sent: list[bytes] = []
        self.gate = asyncio.Event()
        self.closed = asyncio.Event()

    async def send(self, data: bytes) -> None:
        await self.gate.wait()
        self.sent.append(data)

    async def recv(self) -> bytes | str:
        if self.inbound:
            return self.inbound.pop(0)
        await self.closed.wait()
        raise ConnectionClosedOK(None, None)

    async def close(self) -> None:
        self.closed.set()


def unpack(data: bytes) -> object:
    """One sync message."""
    return decode(data, max_bytes=1 << 20, max_entries=100)


async def _no_events(events: list[Event]) -> None:
    pass


def test_a_peer_that_does_not_read_is_closed_overloaded() -> None:
    net, made = world()
    pipe = connect(port_with(net, made), port_with(net, made))  # in sync, live
    blocks = [e for e in made if isinstance(e, Block)][:8]

    async def go() -> Closed:
        sock = FakeSocket()
        link = Link(sock, pipe.server, queue_messages_max=3)  # type: ignore[arg-type]
        runner = asyncio.create_task(link.run(_no_events))
        for b in blocks:
            await link.call(lambda c, b=b: c.send_entries([b]))
            await asyncio.sleep(0)
        assert link.closed is not None and link.closed.code == CloseCode.OVERLOADED
        sock.gate.set()  # the peer reads again: the close goes out after what was in flight
        closed = await asyncio.wait_for(runner, 5)
        last = unpack(sock.sent[-1])
        assert isinstance(last, Close) and last.code == CloseCode.OVERLOADED
        assert "reads too slowly" in last.reason
        assert len(sock.sent) <= 2 and sock.closed.is_set()
        return closed

    closed = asyncio.run(go())
    assert closed.code == CloseCode.OVERLOADED and not closed.by_peer


def test_a_text_message_ends_the_conversation() -> None:
    net, made = world()
    server = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE,
                        port=port_with(net, made))

    async def go() -> tuple[Closed, FakeSocket]:
        sock = FakeSocket(["hello?"])
        sock.gate.set()
        link = Link(sock, server)  # type: ignore[arg-type]
        return await asyncio.wait_for(link.run(_no_events), 5), sock

    closed, sock = asyncio.run(go())
    assert closed.code == CloseCode.PROTOCOL and "text message" in closed.reason
    assert isinstance(unpack(sock.sent[-1]), Close)


def test_a_dropped_socket_is_link_down() -> None:
    net, made = world()
    server = Connection(client=False, key=SigningKey.generate(), role=ROLE_NODE,
                        port=port_with(net, made))

    async def go() -> None:
        sock = FakeSocket()
        link = Link(sock, server)  # type: ignore[arg-type]
        runner = asyncio.create_task(link.run(_no_events))
        await asyncio.sleep(0.01)
        sock.closed.set()  # the socket ends with no sync Close
        with pytest.raises(LinkDown, match="dropped"):
            await asyncio.wait_for(runner, 5)

    asyncio.run(go())


def test_client_and_listener_in_process(tmp_path: Path) -> None:
    """Events, cursors kept on both sides, the till's automatic claim, and a resume."""
    net = make_net(tmp_path, witness=False)
    api_fund(net.issuer, Home(net.payer, net.payer_address), 5000)
    tj(net.payer, "pay", "--yes", net.till_address, "2.00")
    payer, till = Wallet.open(net.payer), Wallet.open(net.till)
    till_events: list[SyncEvent] = []
    payer_events: list[SyncEvent] = []

    async def go() -> list[PeerResult]:
        listener = Listener(till, PASSPHRASE, host="127.0.0.1", port=0,
                            on_event=till_events.append)
        urls: list[str] = []
        serving = asyncio.create_task(listener.run(ready=urls.append))
        try:
            while not urls:
                await asyncio.sleep(0.01)
            results = []
            for _ in range(2):  # the second resumes from the cursors kept
                client = SyncClient(payer, PASSPHRASE, peers=[urls[0]], once=True,
                                    on_event=payer_events.append)
                try:
                    results += await client.run()
                finally:
                    client.shutdown()
            return results
        finally:
            listener.stop()
            await serving
            listener.shutdown()

    try:
        first, second = asyncio.run(go())
        assert first.in_sync and second.in_sync and first.kind == "peer"
        assert first.received > 0 and first.peer_key == till.device
        kinds = [type(e).__name__ for e in payer_events]
        assert kinds[:2] == ["Linked", "Progress"] and "Synced" in kinds
        claims = [e for e in till_events if isinstance(e, Claimed)]
        assert [c.amount for c in claims] == [200] and claims[0].status == ACCEPTED_WORD
        assert payer.store.get_meta(f"cursor:{first.url}") is not None
        assert till.store.get_meta(f"cursor:{key_text(payer.device or b'')}") is not None
    finally:
        payer.close()
        till.close()


def live_push(payer: Wallet, till: Wallet,
              sign: Callable[[SyncClient, Listener], Awaitable[object]]
              ) -> tuple[float, list[Claimed], list[Claimed]]:
    """A payer's live session with a till's listener, both polling only once a minute:
    once in sync, ``sign(client, listener)`` commits on one side. The seconds until a
    claim is made on either side (at most 10), and each side's claims."""
    payer_events: list[SyncEvent] = []
    till_claims: list[Claimed] = []

    def claims() -> list[Claimed]:
        return [e for e in payer_events if isinstance(e, Claimed)]

    async def go() -> float:
        listener = Listener(till, PASSPHRASE, host="127.0.0.1", port=0, poll_s=60,
                            on_event=lambda e: till_claims.append(e)
                            if isinstance(e, Claimed) else None)
        urls: list[str] = []
        serving = asyncio.create_task(listener.run(ready=urls.append))
        client = None
        try:
            while not urls:
                await asyncio.sleep(0.01)
            client = SyncClient(payer, PASSPHRASE, peers=[urls[0]], poll_s=60,
                                on_event=payer_events.append)
            running = asyncio.create_task(client.run())
            for _ in range(200):
                if any(isinstance(e, Synced) for e in payer_events):
                    break
                await asyncio.sleep(0.05)
            start = time.monotonic()
            await sign(client, listener)
            while not (till_claims or claims()) and time.monotonic() - start < 10:
                await asyncio.sleep(0.02)
            took = time.monotonic() - start
            client.stop()
            await running
            return took
        finally:
            if client is not None:
                client.shutdown()
            listener.stop()
            await serving
            listener.shutdown()

    took = asyncio.run(go())
    return took, claims(), till_claims


def test_a_live_session_pushes_what_this_process_commits_without_polling(
        tmp_path: Path) -> None:
    """A payment signed on the client's own wallet goes out at once: the client hears
    the wallet's commit (its poll, here a minute, only finds other processes' rows)."""
    net = make_net(tmp_path, witness=False)
    api_fund(net.issuer, Home(net.payer, net.payer_address), 5000)
    payer, till = Wallet.open(net.payer), Wallet.open(net.till)
    to = parse_address(net.till_address)
    try:
        took, _, till_claims = live_push(
            payer, till, lambda c, _: c.offload(lambda: payer.pay(to, 300, PASSPHRASE)))
        assert [c.amount for c in till_claims] == [300], "the till got it and claimed it"
        assert took < 5, f"pushed on the commit, not on a poll ({took:.2f} s)"
        assert payer._listeners == [], "the client unsubscribed when it stopped"
    finally:
        payer.close()
        till.close()


def test_a_listening_till_pushes_what_it_commits_without_polling(tmp_path: Path) -> None:
    """`tally serve` too: a payment the till signs reaches a connected payer at once."""
    net = make_net(tmp_path, witness=False)
    api_fund(net.issuer, Home(net.till, net.till_address), 5000)
    payer, till = Wallet.open(net.payer), Wallet.open(net.till)
    to = parse_address(net.payer_address)
    try:
        took, payer_claims, _ = live_push(
            payer, till, lambda _, lst: lst.offload(lambda: till.pay(to, 400, PASSPHRASE)))
        assert [c.amount for c in payer_claims] == [400], "the payer got it and claimed it"
        assert took < 5, f"pushed on the commit, not on a poll ({took:.2f} s)"
        assert till._listeners == [], "the listener unsubscribed when it stopped"
    finally:
        payer.close()
        till.close()


def test_a_catch_up_of_several_messages_reports_progress(tmp_path: Path) -> None:
    """5,100 entries: bulk messages over websockets' default 1 MiB, progress per message."""
    net = LedgerNet(witnesses=0, quorum=0, rng=random.Random(5))
    dev = net.account().devices[0]
    made: list[Block] = []
    prev: Block = net.mint.open
    for _ in range(5100):
        prev = net.issue(prev, dev, 1)
        made.append(prev)
    genesis = tmp_path / "net.genesis"
    genesis.write_bytes(net.genesis.raw)
    till_home, payer_home = api_wallets(genesis, tmp_path / "till", tmp_path / "payer")
    till, payer = Wallet.open(till_home.path), Wallet.open(payer_home.path)
    till.ingest_bodies([b.raw for b in (*net.opens, *made)])
    events: list[SyncEvent] = []

    async def go() -> PeerResult:
        listener = Listener(till, PASSPHRASE, host="127.0.0.1", port=0)
        urls: list[str] = []
        serving = asyncio.create_task(listener.run(ready=urls.append))
        try:
            while not urls:
                await asyncio.sleep(0.01)
            client = SyncClient(payer, PASSPHRASE, relays=[urls[0]], once=True,
                                on_event=events.append)
            try:
                [result] = await client.run()
                return result
            finally:
                client.shutdown()
        finally:
            listener.stop()
            await serving
            listener.shutdown()

    try:
        result = asyncio.run(go())
        assert result.in_sync and result.kind == "relay", result
        progress = [e.received for e in events if isinstance(e, Progress)]
        assert len(progress) >= 2 and progress == sorted(progress), progress
        assert progress[-1] == result.received >= 5100
        assert payer.store.high_water() == till.store.high_water()
    finally:
        payer.close()
        till.close()


def test_connection_errors_are_named_for_people() -> None:
    import errno
    import ssl

    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('x', 1)")
    assert os_reason(refused) == "connection refused"
    assert os_reason(socket.gaierror(-2, "Name or service not known")).startswith(
        "unknown host")
    tls = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] bad")
    assert os_reason(tls).startswith("tls: ")
    assert os_reason(OSError("something else")) == "something else"


def test_a_client_trusts_a_self_signed_relay_with_ca(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``SyncClient(ca=FILE)`` against a real ``tally-relay --tls-cert --tls-key`` with a
    self-signed certificate: refused without it (the message says what to give), in sync
    with it, and a bad ``ca`` file is refused before anything connects."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    cert, key = self_signed(tmp_path)
    net = make_net(tmp_path, witness=False)
    relay = start_relay(tmp_path, "--network", net.genesis, "--tls-cert", cert,
                        "--tls-key", key, tls=ssl.create_default_context(cafile=str(cert)))
    assert relay.url.startswith("wss://")
    issuer, payer = Wallet.open(net.issuer), Wallet.open(net.payer)

    async def sync(w: Wallet, ca: Path | None) -> tuple[PeerResult, list[Claimed]]:
        client = SyncClient(w, PASSPHRASE, relays=[relay.url], once=True, ca=ca)
        try:
            [result] = await client.run()
            return result, client.claimed
        finally:
            client.shutdown()

    try:
        issuer.pay(parse_address(net.payer_address), 2000, PASSPHRASE)  # an issue to send
        refused, _ = asyncio.run(sync(issuer, None))
        assert not refused.in_sync and refused.error is not None
        assert refused.error.startswith(f"cannot reach {relay.url}: tls: "), refused.error
        assert "self-signed" in refused.error and "--ca FILE" in refused.error
        assert relay.health()["entries"] == 0  # nothing went through

        trusted, _ = asyncio.run(sync(issuer, cert))
        assert trusted.in_sync and trusted.error is None, trusted.error
        assert relay.health()["entries"] >= 2  # the mint's open and the issue
        got, claimed = asyncio.run(sync(payer, cert))
        assert got.in_sync and [c.amount for c in claimed] == [2000]

        with pytest.raises(WalletError, match="cannot read the CA file"):
            SyncClient(payer, PASSPHRASE, relays=[relay.url], ca=tmp_path / "absent.pem")
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        with pytest.raises(WalletError, match="holds no certificate to trust"):
            SyncClient(payer, PASSPHRASE, relays=[relay.url], ca=junk)
    finally:
        issuer.close()
        payer.close()
        assert relay.stop() == 0


def test_a_sessions_push_loop_ends_when_cancelled_as_the_wallet_commits(
        tmp_path: Path) -> None:
    """The push loop is cancelled when its session ends. A cancel that lands in the
    same pass as a commit's wake-up must still end it (``asyncio.wait_for`` in Python
    3.11 returns the wake-up instead, and the loop outlived its session forever: the
    simulation found it)."""
    from sync.client import PeerResult, WalletSync, _Session
    from sync.transport import inline
    from tests.clikit import PASSPHRASE, api_network, api_wallets

    api_network(tmp_path, "push")
    [home] = api_wallets(tmp_path / "g", tmp_path / "w")
    w = Wallet.open(home.path)

    async def go() -> None:
        sync = WalletSync(w, PASSPHRASE, offload=inline)
        session = _Session("peer", 0, PeerResult("peer"))
        loop = asyncio.create_task(sync._push_loop(None, session))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # it waits for a commit
        sync._moved.set()  # a commit wakes it, and in the same pass its session ends
        loop.cancel()
        done, _ = await asyncio.wait({loop}, timeout=5)
        assert done, "the push loop outlived its session"
        assert loop.cancelled()

    try:
        asyncio.run(go())
    finally:
        w.close()
