"""A long-running till keeps bounded state: ``Listener.results`` (one ``PeerResult`` per
payer session) and ``WalletSync.claimed`` (one ``Claimed`` per automatic claim) keep only
the most recent ``RESULTS_KEPT_SESSIONS`` and ``CLAIMED_KEPT_CLAIMS``, while every claim
is still reported as its event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import sync.client
import sync.listener
from sync.client import CLAIMED_KEPT_CLAIMS, Claimed, PeerResult, SyncClient, SyncEvent
from sync.listener import RESULTS_KEPT_SESSIONS, Listener
from tests.clikit import PASSPHRASE, Home, api_fund
from tests.test_sync_client import make_net
from wallet.address import parse_address
from wallet.wallet import Wallet

SESSIONS = 5
KEPT = 2


def test_the_real_bounds_are_set_where_the_objects_are_made(tmp_path: Path) -> None:
    """The constants are what bound the objects (not only in the patched test below)."""
    net = make_net(tmp_path, witness=False)
    till = Wallet.open(net.till)
    try:
        listener = Listener(till, PASSPHRASE, host="127.0.0.1", port=0)
        client = SyncClient(till, PASSPHRASE, peers=["ws://127.0.0.1:1"], once=True)
        try:
            assert listener.results.maxlen == RESULTS_KEPT_SESSIONS
            assert listener.claimed.maxlen == CLAIMED_KEPT_CLAIMS
            assert client.claimed.maxlen == CLAIMED_KEPT_CLAIMS
            assert 0 < RESULTS_KEPT_SESSIONS <= 10_000 and 0 < CLAIMED_KEPT_CLAIMS <= 100_000
        finally:
            listener.shutdown()
            client.shutdown()
    finally:
        till.close()


def test_a_till_keeps_only_the_latest_sessions_and_claims(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With both bounds patched to 2: a payer pays the till and syncs with it 5 times;
    the till claims each payment (5 ``Claimed`` events) but keeps only the last 2 claims
    and the last 2 sessions, never more at any point."""
    monkeypatch.setattr(sync.listener, "RESULTS_KEPT_SESSIONS", KEPT)
    monkeypatch.setattr(sync.client, "CLAIMED_KEPT_CLAIMS", KEPT)
    net = make_net(tmp_path, witness=False)  # q = 0: the funds are final at once
    api_fund(net.issuer, Home(net.payer, net.payer_address), 5000)
    payer, till = Wallet.open(net.payer), Wallet.open(net.till)
    till_events: list[SyncEvent] = []
    sizes: list[tuple[int, int]] = []

    async def go() -> tuple[list[PeerResult], list[PeerResult]]:
        listener = Listener(till, PASSPHRASE, host="127.0.0.1", port=0,
                            on_event=till_events.append)
        urls: list[str] = []
        serving = asyncio.create_task(listener.run(ready=urls.append))
        mine: list[PeerResult] = []
        try:
            while not urls:
                await asyncio.sleep(0.01)
            for i in range(SESSIONS):
                payer.pay(parse_address(net.till_address), 100 + i, PASSPHRASE)
                client = SyncClient(payer, PASSPHRASE, peers=[urls[0]], once=True)
                try:
                    [result] = await client.run()
                finally:
                    client.shutdown()
                assert result.in_sync, result
                mine.append(result)
                for _ in range(500):  # the till's claim of this payment
                    await listener.claims_done()
                    if sum(isinstance(e, Claimed) for e in till_events) > i:
                        break
                    await asyncio.sleep(0.01)
                for _ in range(500):  # and the till's side of the session has ended
                    if not listener.active:
                        break
                    await asyncio.sleep(0.01)
                sizes.append((len(listener.results), len(listener.claimed)))
        finally:
            listener.stop()
            returned = await serving
            listener.shutdown()
        claims_kept[:] = list(listener.claimed)
        return mine, returned

    claims_kept: list[Claimed] = []
    try:
        mine, returned = asyncio.run(go())
        claims = [e for e in till_events if isinstance(e, Claimed)]
        assert [c.amount for c in claims] == [100 + i for i in range(SESSIONS)]
        assert sizes == [(min(n, KEPT), min(n, KEPT)) for n in range(1, SESSIONS + 1)], sizes
        assert claims_kept == claims[-KEPT:]  # the most recent, oldest first
        assert len(returned) == KEPT  # what run() returns: the sessions kept
        assert [r.error for r in returned] == [None] * KEPT
        assert all(r.peer_key == payer.device for r in returned)
        assert len(mine) == SESSIONS
    finally:
        payer.close()
        till.close()
