"""Bugs planted in the shipped code, one at a time, to show the simulator finds each
(``tests/test_sim.py``). They live here only, and only in the process that runs them:

    python -m tests.sim_plants PLANT [sim options]

- ``gate_delete_set``: the CRDT gate lets an update with a delete set through;
- ``witness_forgets``: a relay's witness forgets its slot claims when it restarts;
- ``ack_before_commit``: the relay acknowledges what peers sent before its group
  commit, and commits a moment later;
- ``fork_side_ignored``: the validator, at a fork with no side certified, takes one
  side and ignores the other.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import sim.run  # first: the simulator's own oracles keep the code as shipped
import wallet.crdt
import wallet.ledger
from server import relay, store
from wallet.errors import GateRefused


def gate_delete_set() -> None:
    shipped = wallet.crdt.decode_update

    def lenient(update: bytes, *, max_bytes: int, max_items: int) -> list:
        try:
            return shipped(update, max_bytes=max_bytes, max_items=max_items)
        except GateRefused as exc:
            if exc.reason != "delete":
                raise
            for cut in range(len(update) - 1, 0, -1):  # the structs, without the deletes
                try:
                    return shipped(update[:cut] + b"\x00", max_bytes=max_bytes,
                                   max_items=max_items)
                except GateRefused:
                    continue
            raise

    wallet.crdt.decode_update = lenient


def witness_forgets() -> None:
    shipped = store._open_network

    def forgetful(path):  # type: ignore[no-untyped-def]
        conn = shipped(path)
        conn.execute("DELETE FROM claims")
        return conn

    store._open_network = forgetful


def ack_before_commit() -> None:
    def flush(self: relay.Relay) -> None:
        self._flush_pending = False
        to_ack, self.to_ack = self.to_ack, {}
        for s in to_ack:
            s.conn.acknowledge()
            s.push()
        st = self.store

        def commit() -> None:
            if st.nets:  # (not after a crash)
                st.commit_group()
                for net in self.networks.values():
                    net.cursor_moved()
        asyncio.get_running_loop().call_later(1.0, commit)  # a slow group commit

    relay.Relay.flush = flush  # type: ignore[method-assign]


def fork_side_ignored() -> None:
    shipped = wallet.ledger.Ledger._decide

    def decide(self, d, slot, cands):  # type: ignore[no-untyped-def]
        winner, reason = shipped(self, d, slot, cands)
        if winner is None and reason == wallet.ledger.R_DISPUTED:
            return sorted(cands)[0], wallet.ledger.R_LOST
        return winner, reason

    wallet.ledger.Ledger._decide = decide  # type: ignore[method-assign]


PLANTS: dict[str, Callable[[], None]] = {
    f.__name__: f for f in (gate_delete_set, witness_forgets, ack_before_commit,
                            fork_side_ignored)}


def main(argv: list[str]) -> int:
    """Plant one bug, then run the simulator with the rest of the arguments."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        raise SystemExit("run with PYTHONHASHSEED=0 (as python -m sim does)")
    plant = argv[0]
    PLANTS[plant]()
    shipped = sim.run.replay_command
    sim.run.replay_command = lambda seed, steps, calm=(): (  # type: ignore[assignment]
        shipped(seed, steps, calm).replace(
            "./dev sim", f"PYTHONHASHSEED=0 python -m tests.sim_plants {plant}"))
    return sim.run.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
