"""Signature checks of a bulk batch in worker processes, beside the merge.

Threads cannot overlap the checks with a merge: each check needs the GIL around its
libsodium call, and a merge that holds the GIL makes every check wait for the switch
interval (5 ms), so both crawl. Worker processes have interpreters of their own: they
parse and check the batch's bodies on the other cores while this process merges it,
and the merge's transaction commits only once they all said yes (``Checks.result``).

This module imports nothing of the wallet but its encoding, so a worker starts fast.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from wallet.encoding import SIG_BYTES, Entry, Kind, parse_entry, signature_problem, verify_signed

PROCESS_CHECK_MIN = 20_000
"""Entries from which a batch is checked in worker processes (each costs ~0.1 s to
start, the time of ~2,000 checks)."""
CHUNKS_PER_WORKER = 16
"""Chunks a batch is cut into per worker: small enough that the merging process, once
done, takes over the chunks no worker has begun."""


def first_bad(entries: Sequence[Entry], start: int = 0, stop: int | None = None) -> int | None:
    """The position of the first entry in ``entries[start:stop]`` whose signature (or,
    for an open, its account's signature) fails, or None."""
    for i in range(start, len(entries) if stop is None else stop):
        e = entries[i]
        if not verify_signed(e.signer, e.signature + e.raw[:-SIG_BYTES]):
            return i
        if e.kind == Kind.OPEN and signature_problem(e):
            return i
    return None


def first_bad_body(bodies: list[bytes]) -> int | None:
    """``first_bad`` over well-formed raw entries (what a worker runs)."""
    return first_bad([parse_entry(b, verify=False) for b in bodies])


class Checks:
    """The checks of ``entries`` running in worker processes; ``result`` waits."""

    def __init__(self, entries: Sequence[Entry], workers: int | None = None) -> None:
        n = len(entries)
        workers = workers or max(1, (os.cpu_count() or 2) - 1)  # one core merges
        chunk = max(1, -(-n // (workers * CHUNKS_PER_WORKER)))
        self._entries = entries
        self._chunk = chunk
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        self._parts: list[tuple[int, Future[int | None]]] = [
            (i, self._pool.submit(first_bad_body, [e.raw for e in entries[i : i + chunk]]))
            for i in range(0, n, chunk)
        ]

    def result(self) -> int | None:
        """The position of the first bad entry, or None once every check held. The
        chunks no worker has begun yet are checked here, from the last one back."""
        try:
            bad: list[int] = []
            for start, part in reversed(self._parts):
                if not part.cancel():
                    break
                stop = min(start + self._chunk, len(self._entries))
                at = first_bad(self._entries, start, stop)
                if at is not None:
                    bad.append(at)
            for start, part in self._parts:
                if part.cancelled():
                    break
                at = part.result()
                if at is not None:
                    bad.append(start + at)
                    break
            return min(bad) if bad else None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers (what they had not begun is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
