"""Signature checks of a bulk batch in worker processes, beside the merge.

Threads cannot overlap the checks with a merge: each check needs the GIL around its
libsodium call, and a merge that holds the GIL makes every check wait for the switch
interval (5 ms), so both crawl. Worker processes (``python -m wallet.verify_worker``,
started as plain subprocesses, so nothing of the caller's main module is imported
again the way ``multiprocessing`` would) have interpreters of their own: they check
the batch's entries chunk by chunk on the other cores while this process merges it,
and the merge's transaction commits only once every chunk held (``Checks.result``).
Once merged, this process checks the chunks no worker has taken yet itself, and a
chunk whose worker died is checked here too.
"""

from __future__ import annotations

import collections
import contextlib
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

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

    command: tuple[str, ...] = (sys.executable, "-m", "wallet.verify_worker")

    def __init__(self, entries: Sequence[Entry], workers: int | None = None) -> None:
        n = len(entries)
        workers = workers or max(1, (os.cpu_count() or 2) - 1)  # one core merges
        self._entries = entries
        self._chunk = max(1, -(-n // (workers * CHUNKS_PER_WORKER)))
        self._todo = collections.deque(range(0, n, self._chunk))  # chunks not taken
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bad: list[int] = []
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)  # where ``wallet`` is found
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._procs = [subprocess.Popen(list(self.command),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=env) for _ in range(workers)]
        self._threads = [threading.Thread(target=self._feed, args=(p,), daemon=True,
                                          name="check-feed") for p in self._procs]
        for t in self._threads:
            t.start()

    def _take(self, *, front: bool) -> int | None:
        with self._lock:
            if not self._todo or (front and self._stop.is_set()):
                return None
            return self._todo.popleft() if front else self._todo.pop()

    def _feed(self, proc: subprocess.Popen[bytes]) -> None:
        """Hand chunks to one worker until none is left (or the worker dies: its chunk
        goes back, for this process to check)."""
        assert proc.stdin is not None and proc.stdout is not None
        while (start := self._take(front=True)) is not None:
            part = self._entries[start : start + self._chunk]
            frame = [struct.pack(">I", len(part))]
            for e in part:
                frame += (struct.pack(">I", len(e.raw)), e.raw)
            try:
                proc.stdin.write(b"".join(frame))
                proc.stdin.flush()
                answer = proc.stdout.read(8)
            except (OSError, ValueError):
                answer = b""
            if len(answer) < 8:
                with self._lock:
                    self._todo.append(start)
                return
            (bad,) = struct.unpack(">q", answer)
            if bad >= 0:
                with self._lock:
                    self._bad.append(start + bad)

    def _check_here(self) -> None:
        while (start := self._take(front=False)) is not None:
            at = first_bad(self._entries, start, min(start + self._chunk, len(self._entries)))
            if at is not None:
                with self._lock:
                    self._bad.append(at)

    def result(self) -> int | None:
        """The position of the first bad entry, or None once every check held."""
        try:
            self._check_here()  # what no worker took yet, from the last chunk back
            for t in self._threads:
                t.join()
            self._check_here()  # the chunks of workers that died
            return min(self._bad) if self._bad else None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers (chunks not yet taken are dropped)."""
        self._stop.set()
        for p in self._procs:
            if p.stdin is not None and not p.stdin.closed:
                with contextlib.suppress(OSError):  # gone already: nothing to tell it
                    p.stdin.close()  # the worker ends at the end of its input
        for t in self._threads:
            t.join(5)
        for p in self._procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
