"""Terminal-app benchmark (issue 14): the app on the 100,000-block wallet, in a real
terminal, from one run.

    python bench/tui.py [--pages N] [--starts N] [--profile FILE]

The wallet is ``bench/ingest.py``'s (built once and cached by ``bench/state.py``'s
``build_wallet``: 200,000 entries, the bench account's three devices and their money),
copied to a scratch home under ``bench/out/`` (not funded as ``bench/state.py``'s copy
is: the account holds money of its own). The packages are byte-compiled first and
``tally balance`` runs once (a store of an older schema is rebuilt there, and the disk
cache is warm), as ``bench/state.py`` does.

The app runs for real: each measured process is ``python bench/tui.py --child`` on the
slave side of a pseudo-terminal (120×40, ``TERM=xterm-256color``), which imports
``tui.cli`` as ``tally`` does, opens the ``WalletService`` and runs ``TallyApp`` through
``App.run_test(headless=False)``: Textual's own Linux driver draws every frame and
writes it to the terminal (this process drains it), and Textual's Pilot machinery lets
the child press keys (the driver's ``send_message``, as its input thread does) and wait.
The child adds one hook to the app: after each ``App._display`` (a frame encoded and
handed to the terminal) it notes the time and what the screen showed. Times are
``time.monotonic()`` in both processes (one clock on Linux).

- ``start_s``: from just before this process spawns the child to the moment the Home
  screen's balance ("… spendable") arrives on the terminal, read from the pty here;
  the median of ``--starts`` processes (each also shown on stderr).
- ``history_open_s``: from the ``h`` key event to the first frame of the history screen
  whose ``HistoryView`` holds rows (its first page, read from the store).
- ``page_down_ms``: the mean over ``--pages`` ``pagedown`` key events (50 ms apart, from
  the top of the history; fewer when the history ends first: the bench account's 1,346
  rows are 40 pages at this size), each from the key event to the first frame showing
  the view scrolled; the worst is on a progress line. Textual animates a page-down at 50 lines
  a second by default, which makes a page glide for about 0.7 s whatever the app's
  cost: these presses run with ``App.animation_level = "none"`` (the new page in one
  frame, after up to one tick of Textual's animator). Ten ``pageup`` presses back from
  the end with the default animation are on a progress line: the first frame to move,
  and the frame that reaches the page.
- ``frame_gap_ms_max``: the worst gap between two callbacks of a 1/60 s
  ``set_interval`` timer on the app (the event loop's ticks; a frame can be drawn no
  more often), from the moment the app starts its background sync until the wallet's
  store (polled here, from outside the app: ``SELECT count(*) FROM entries``) holds the
  20,000 new entries. Back on Home, the app is given the relay as ``tally relays add``
  would (``Wallet.remember_links``) and starts its sync (``TallyApp.start_sync``, what it
  does at mount when a relay is remembered; the home has none before, so the first
  three figures are measured with the app offline). The relay is a ``tally-relay`` on a
  copy of ``bench/relay.py``'s cached database of the wallet's 200,000 entries, with
  20,000 more stored in it before it starts: 10,000 new blocks and their votes that
  continue the network's chains (each device's head, spendable money and unclaimed
  payments read from the wallet's ledger) with bench/ingest.py's keys and its mix of
  issues, payments, moves and claims; some pay the bench account. Also shown: the
  worst wait of a callback queued on the app's message queue at each tick (what a key
  press waits), and how long the sync took.

``--profile FILE`` samples every thread's Python stack in the app's process every 2 ms
during the sync and writes to FILE what they show: which functions each thread spends
its time in, what the app's thread ran during the worst gaps, and the longest holes in
the sampling (the sampler needs the GIL: a hole is a thread holding it, or the process
not running), with the garbage collector's pauses (``gc.callbacks``) and the time of each
Home refresh and ``Wallet.refresh`` on the app's thread; the figures of such a run are
not the benchmark's.

Progress goes to stderr; the last line is
``start_s=… history_open_s=… page_down_ms=… frame_gap_ms_max=…``.
Goals: start_s < 1, history_open_s < 0.5, page_down_ms < 50, frame_gap_ms_max < 100.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is bench/tui.py: with bench/ first on the path, ``import tui`` would be this
# file. The project comes first; bench/ (state.py, relay.py, ingest.py) after it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
sys.path.append(str(HERE))

OUT = HERE / "out"
BLOCKS = 100_000
NEW_ENTRIES = 20_000  # what the relay holds beyond the wallet
SEED = 1  # bench/ingest.py's default generator seed
COLS, ROWS = 120, 40
PAGES = 50
ANIMATED_PAGES = 10
STARTS = 3
WAIT_S = 20.0  # the longest wait for one frame
SYNC_TIMEOUT_S = 900.0
SETTLE_S = 300.0  # the longest wait for the app's link to say "in sync" before quitting
BALANCE_ON_TERMINAL = re.compile(
    rb"\d\.\d\d (?:\x1b\[[0-9;:]*m)*[A-Z]{3}(?:\x1b\[[0-9;:]*m)* +(?:\x1b\[[0-9;:]*m)*spendable")
"""Home's balance line as the terminal receives it (not the devices table's header)."""


def log(msg: str) -> None:
    """Progress, on stderr."""
    print(msg, file=sys.stderr, flush=True)


# =========================================================================== the child
async def child(home: Path, mode: str, ev_fd: int, ctl_fd: int, pages: int,
                profile: str | None) -> None:
    """The app, driven: report each measurement as a JSON line on ``ev_fd``; read the
    parent's word on ``ctl_fd``."""
    from textual import events
    from textual.screen import Screen
    from textual.widgets import Static

    from tui import cli  # noqa: F401  (imported as `tally` imports it)
    from tui.app import TallyApp
    from tui.screens.history import HistoryScreen, HistoryView
    from tui.screens.home import HomeScreen
    from tui.service import WalletService
    from wallet.collector import tune_for_long_run

    def report(**kw: Any) -> None:
        os.write(ev_fd, (json.dumps(kw) + "\n").encode())

    waiters: list[tuple[Callable[[Screen], bool], asyncio.Future[float]]] = []
    frames: list[float] = []

    class BenchApp(TallyApp):
        """The app, noting when each frame went to the terminal (its driver's writer)."""

        wrote = False

        def _display(self, screen: Screen, renderable: Any) -> None:
            driver = self._driver
            if driver is not None and not getattr(driver, "bench_wrapped", False):
                write = driver.write

                def noted(data: str) -> None:
                    self.wrote = True
                    write(data)

                driver.write = noted  # type: ignore[method-assign]
                driver.bench_wrapped = True  # type: ignore[attr-defined]
            self.wrote = False
            super()._display(screen, renderable)
            if not self.wrote:
                return  # no frame went out (none to draw, or updates batched)
            now = time.monotonic()
            frames.append(now)
            for pair in list(waiters):
                check, fut = pair
                try:
                    hit = check(screen)
                except Exception:  # a screen still being put together
                    hit = False
                if hit and not fut.done():
                    fut.set_result(now)
                if fut.done():
                    waiters.remove(pair)

    async def frame_where(check: Callable[[Screen], bool], what: str) -> float:
        """The time of the first frame (from now on) for whose screen ``check`` holds."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiters.append((check, fut))
        try:
            return await asyncio.wait_for(fut, WAIT_S)
        except TimeoutError:
            raise SystemExit(f"no frame showed {what} within {WAIT_S:.0f} s") from None

    def balance_shown(screen: Screen) -> bool:
        return isinstance(screen, HomeScreen) and "spendable" in str(
            screen.query_one("#account", Static).render())

    service = WalletService.open(home)
    app = BenchApp(service)
    tune_for_long_run()  # as TallyApp.run does before a person's run
    try:
        home_frame = asyncio.ensure_future(frame_where(balance_shown, "the balance"))
        async with app.run_test(headless=False, size=(COLS, ROWS), notifications=True):
            report(ev="balance_frame", t=await home_frame)
            if mode == "start":
                await asyncio.sleep(0.5)  # (this process is timed by the terminal)
                return
            driver = app._driver
            assert driver is not None

            def press(key: str) -> float:
                t = time.monotonic()
                driver.send_message(events.Key(key, key if len(key) == 1 else None))
                return t

            # ------------------------------------------------------------ history
            def history_rows(screen: Screen) -> bool:
                if not isinstance(screen, HistoryScreen):
                    return False
                view = screen.query_one(HistoryView)
                return bool(view.rows) and view.region.height > 0

            t0 = press("h")
            t1 = await frame_where(history_rows, "the history's rows")
            view = app.screen.query_one(HistoryView)
            report(ev="history", s=t1 - t0, rows=len(view.rows), height=view.region.height)

            # ------------------------------------------------------------ page-downs
            async def page(key: str, animated: bool) -> tuple[float, float] | None:
                y0 = view.scroll_offset.y
                at_end = view.done and y0 >= view.max_scroll_y
                if (key == "pageup" and y0 == 0) or (key == "pagedown" and at_end):
                    return None  # the end of the history
                t0 = press(key)
                t1 = await frame_where(lambda s: view.scroll_offset.y != y0, "a page down")
                t2 = t1
                if animated and abs(view.scroll_offset.y - view.scroll_target_y) >= 1:
                    t2 = await frame_where(  # the glide's last step that moves a line
                        lambda s: abs(view.scroll_offset.y - view.scroll_target_y) < 1,
                        "a page's glide end")
                await asyncio.sleep(0.05)
                return t1 - t0, t2 - t0

            await asyncio.sleep(0.2)
            app.animation_level = "none"
            plain: list[float] = []
            reads0 = view.pages_read
            for _ in range(pages):
                got = await page("pagedown", animated=False)
                if got is None:
                    break
                plain.append(got[0])
            report(ev="pages", ms=[s * 1000 for s in plain], rows=len(view.rows),
                   store_pages=view.pages_read - reads0, top=int(view.scroll_offset.y))
            app.animation_level = "full"
            glide: list[tuple[float, float]] = []
            for _ in range(ANIMATED_PAGES):
                got = await page("pageup", animated=True)
                if got is None:
                    break
                glide.append(got)
            report(ev="glide", first_ms=[a * 1000 for a, _ in glide],
                   end_ms=[b * 1000 for _, b in glide])

            # ------------------------------------------------------------ sync
            press("escape")
            await frame_where(lambda s: isinstance(s, HomeScreen), "Home again")
            await asyncio.sleep(0.5)
            ticks: list[float] = []
            waits: list[tuple[float, float]] = []  # (queued, ran)

            def ran(queued: float) -> None:
                waits.append((queued, time.monotonic()))

            def tick() -> None:
                now = time.monotonic()
                ticks.append(now)
                app.call_later(ran, now)

            timer = app.set_interval(1 / 60, tick)
            await asyncio.sleep(0.5)
            stop: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            buf = b""

            def readable() -> None:
                nonlocal buf
                buf += os.read(ctl_fd, 4096)
                if b"\n" in buf and not stop.done():
                    stop.set_result(float(buf.split(b"\n", 1)[0].split()[1]))

            asyncio.get_running_loop().add_reader(ctl_fd, readable)
            sampler = None
            if profile:
                sampler = Sampler()
                sampler.timed(HomeScreen, "refresh_balances")
                sampler.timed(app.service.wallet.__class__, "refresh")
                sampler.start()
            n_frames0 = len(frames)
            from sync.client import check_url  # (`tally` loads the sync client to sync)

            url = check_url(os.environ["BENCH_RELAY_URL"])
            t_sync = time.monotonic()
            service.wallet.remember_links({url: "relay"})
            app.start_sync()
            report(ev="sync_started", t=t_sync)
            t_done = await stop
            await asyncio.sleep(0.1)  # the tick after t_done closes the last gap
            timer.stop()
            inside = [t for t in ticks if t >= t_sync]
            before = [t for t in ticks if t < t_sync][-1:]
            seq = before + inside
            gaps = [(b - a, a) for a, b in itertools.pairwise(seq) if a < t_done]
            worst, at = max(gaps) if gaps else (float("nan"), t_sync)
            if sampler is not None and profile:
                sampler.stop = True
                sampler.join()
                Path(profile).write_text(sampler.summary(
                    sorted(gaps, reverse=True)[:3], t_sync, t_done))
            lag = [r - q for q, r in waits if t_sync <= q <= t_done]
            in_window = [f for f in frames[n_frames0:] if f <= t_done]
            report(ev="sync", gap_ms_max=worst * 1000, gap_at_s=at - t_sync,
                   gap_ms_p99=_pct([g for g, _ in gaps], 99) * 1000, ticks=len(gaps),
                   queue_ms_max=max(lag, default=float("nan")) * 1000,
                   frames=len(in_window))
            # Quitting while the wallet thread waits on the app (its commit's events are
            # handed over one by one) does not end: let the sync get in sync first.
            t_q = time.monotonic()
            while time.monotonic() - t_q < SETTLE_S and not any(
                    v.startswith("in sync") for v in app.link_states.values()):
                await asyncio.sleep(0.2)
            report(ev="settled", s=time.monotonic() - t_sync, links=dict(app.link_states))
    finally:
        service.close()


class Sampler(threading.Thread):
    """(``--profile``) Every thread's Python stack, sampled every 2 ms: where each
    thread spends its time, and what the app's thread ran during the worst gaps."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.stop = False
        self.samples: list[tuple[float, int, tuple[tuple[str, str, int], ...]]] = []
        self.names: dict[int, str] = {}
        self.cpu: dict[float, float] = {}  # round → the process's CPU seconds then
        self.calls: dict[str, list[tuple[float, float]]] = {}  # name → (start, seconds)
        self.gcs: list[tuple[float, float, int, str]] = []  # start, s, generation, thread
        self._gc_start = 0.0
        import gc

        gc.callbacks.append(self._gc)
        self.objects = len(gc.get_objects())

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        """(A gc callback) note each collection's pause."""
        now = time.monotonic()
        if phase == "start":
            self._gc_start = now
        else:
            self.gcs.append((self._gc_start, now - self._gc_start, info["generation"],
                             threading.current_thread().name))

    def timed(self, cls: type, name: str) -> None:
        """Time each call of ``cls.name`` on the app's thread (this process only)."""
        fn = getattr(cls, name, None)
        if fn is None:
            return
        calls = self.calls.setdefault(f"{cls.__name__}.{name}", [])
        main = threading.main_thread().ident

        def timed_call(*args: Any, **kw: Any) -> Any:
            if threading.get_ident() != main:
                return fn(*args, **kw)
            t = time.monotonic()
            try:
                return fn(*args, **kw)
            finally:
                calls.append((t, time.monotonic() - t))

        setattr(cls, name, timed_call)

    def run(self) -> None:
        """Sample until told to stop."""
        me = threading.get_ident()
        while not self.stop:
            now = time.monotonic()
            self.cpu[now] = time.process_time()
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                stack = []
                f: Any = frame
                while f is not None and len(stack) < 60:
                    c = f.f_code
                    stack.append((c.co_filename.rsplit("/", 2)[-1], c.co_name, f.f_lineno))
                    f = f.f_back
                self.samples.append((now, tid, tuple(stack)))
            time.sleep(0.002)
        self.names = {t.ident or 0: t.name for t in threading.enumerate()}

    def summary(self, gaps: list[tuple[float, float]], t0: float, t1: float) -> str:
        """Per thread: the functions most often on the stack (inclusive) and running
        (self); then the app thread's stacks inside the worst gaps."""
        from collections import Counter

        out: list[str] = []
        main = threading.main_thread().ident
        import gc

        gc.callbacks.remove(self._gc)
        pauses = [g for g in self.gcs if t0 <= g[0] <= t1]
        if pauses:
            worst_gc = max(pauses, key=lambda g: g[1])
            in_all = sum(g[1] for g in pauses)
            out.append(f"== garbage collections: {len(pauses)}, {in_all * 1000:.0f} ms in all "
                       f"({self.objects} objects tracked at the start, {len(gc.get_objects())}"
                       f" at the end); the longest {worst_gc[1] * 1000:.1f} ms (generation "
                       f"{worst_gc[2]}, on {worst_gc[3]}) at {worst_gc[0] - t0:.2f} s")
        for what, calls in self.calls.items():
            inside = [(d, t) for t, d in calls if t0 <= t <= t1]
            if inside:
                d, t = max(inside)
                out.append(f"== {what} on the app's thread: {len(inside)} calls, "
                           f"{sum(x for x, _ in inside) * 1000:.0f} ms in all, the longest "
                           f"{d * 1000:.1f} ms at {t - t0:.2f} s")
        by_thread: dict[int, list[tuple[tuple[str, str, int], ...]]] = {}
        for t, tid, stack in self.samples:
            if t0 <= t <= t1:
                by_thread.setdefault(tid, []).append(stack)
        for tid, stacks in sorted(by_thread.items(), key=lambda kv: -len(kv[1])):
            name = "app (event loop)" if tid == main else self.names.get(tid, str(tid))
            idle = sum(1 for st in stacks if st and st[0][1] in (
                "select", "poll", "wait", "_worker", "get", "sleep", "acquire", "read"))
            out.append(f"== thread {name}: {len(stacks)} samples, {idle} idle-looking")
            incl: Counter[str] = Counter()
            leaf: Counter[str] = Counter()
            for st in stacks:
                incl.update({f"{fn}:{func}" for fn, func, _ in st})
                if st:
                    leaf[f"{st[0][0]}:{st[0][1]}:{st[0][2]}"] += 1
            out.append("  on the stack (inclusive):")
            out += [f"    {n / len(stacks):6.1%}  {k}" for k, n in incl.most_common(40)]
            out.append("  running (self):")
            out += [f"    {n / len(stacks):6.1%}  {k}" for k, n in leaf.most_common(25)]
        for gap, start in gaps:
            inside = [t for t in self.cpu if start <= t <= start + gap]
            cpu = (self.cpu[max(inside)] - self.cpu[min(inside)]) if inside else 0.0
            out.append(f"== the gap of {gap * 1000:.1f} ms at {start - t0:.2f} s: "
                       f"{len(inside)} sampling rounds, the process ran {cpu * 1000:.0f} ms "
                       "of CPU between the first and the last")
            out += [f"  inside it, a generation-{g} garbage collection on {th}: "
                    f"{d * 1000:.1f} ms at {t - t0:.3f} s"
                    for t, d, g, th in pauses if start <= t + d and t <= start + gap]
            seen: Counter[tuple[int, tuple[tuple[str, str, int], ...]]] = Counter(
                (tid, st[:12]) for t, tid, st in self.samples
                if start <= t <= start + gap and st and st[0][1] != "select"
                and not (tid != main and st[0][1] == "wait"))
            for (tid, st), n in seen.most_common(4):
                name = "app" if tid == main else self.names.get(tid, str(tid))
                out.append(f"  {name}, {n} samples:")
                out += [f"    {fn}:{func}:{line}" for fn, func, line in st]
        # Holes in the sampling itself: the sampler needs the GIL too, so a hole is a
        # thread holding it (a garbage collection, or C code that does not let go).
        rounds = sorted({t for t, _, _ in self.samples if t0 <= t <= t1})
        holes = sorted(((b - a, a, b) for a, b in itertools.pairwise(rounds)), reverse=True)
        for hole, a, b in holes[:3]:
            out.append(f"== no sample for {hole * 1000:.1f} ms at {a - t0:.2f} s (the "
                       f"process ran {(self.cpu[b] - self.cpu[a]) * 1000:.0f} ms of CPU): "
                       "each busy thread's stack just before, then just after")
            for when in (a, b):
                for t, tid, st in self.samples:
                    if t == when and st and st[0][1] not in ("select", "wait"):
                        name = "app" if tid == main else self.names.get(tid, str(tid))
                        out.append(f"  {name} at {when - t0:.3f} s:")
                        out += [f"    {fn}:{func}:{line}" for fn, func, line in st[:12]]
        return "\n".join(out) + "\n"


def _pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank), NaN for none."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def child_main(argv: list[str]) -> int:
    """``--child HOME MODE EV_FD CTL_FD PAGES [PROFILE]``: run the app and report."""
    home, mode, ev_fd, ctl_fd, pages = argv[0], argv[1], int(argv[2]), int(argv[3]), \
        int(argv[4])
    profile = argv[5] if len(argv) > 5 else None
    try:
        asyncio.run(child(Path(home), mode, ev_fd, ctl_fd, pages, profile))
    except BaseException as exc:
        import traceback

        msg = str(exc) if isinstance(exc, SystemExit) else traceback.format_exc()
        os.write(ev_fd, (json.dumps({"ev": "error", "msg": msg}) + "\n").encode())
        return 1
    os.write(ev_fd, b'{"ev": "done"}\n')
    return 0


# =========================================================================== the parent
class Terminal:
    """A pseudo-terminal the child draws on; a thread drains it and notes when the
    balance arrived."""

    def __init__(self) -> None:
        import fcntl
        import pty
        import struct
        import termios

        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.balance_at: float | None = None
        self.bytes = 0
        self.tail = b""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Drain the terminal from now on (once the child holds the slave side)."""
        os.close(self.slave)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        window = b""
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                break  # EIO: the child closed the terminal
            if not data:
                break
            now = time.monotonic()
            self.bytes += len(data)
            window = window[-4096:] + data
            if self.balance_at is None and BALANCE_ON_TERMINAL.search(window):
                self.balance_at = now
            self.tail = window[-2000:]

    def close(self) -> None:
        """Wait for the drain to end (the child gone), and close the terminal."""
        if self._thread is not None:
            self._thread.join(10)
        os.close(self.master)


def _controlling_tty() -> None:
    """(In the child, before exec) a session of its own with the pty as its terminal."""
    import fcntl
    import termios

    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Child:
    """One app process on a terminal of its own, with its report pipe and control pipe."""

    def __init__(self, home: Path, mode: str, url: str, pages: int,
                 profile: str | None) -> None:
        from state import PASSPHRASE

        env = {k: v for k, v in os.environ.items()
               if k not in ("TALLY_HOME", "TALLY_CHECK", "PYTHONDONTWRITEBYTECODE", "NO_COLOR")
               and not k.startswith("TEXTUAL")}
        env.update(TALLY_PASSPHRASE=PASSPHRASE, TERM="xterm-256color", COLORTERM="truecolor",
                   BENCH_RELAY_URL=url, LINES=str(ROWS), COLUMNS=str(COLS))
        self.term = Terminal()
        self.ev_r, ev_w = os.pipe()
        ctl_r, self.ctl_w = os.pipe()
        args = [str(home), mode, str(ev_w), str(ctl_r), str(pages), *([profile] if profile
                                                                       else [])]
        slave = self.term.slave
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", *args],
            stdin=slave, stdout=slave, stderr=slave, pass_fds=(ev_w, ctl_r), env=env,
            cwd=ROOT, preexec_fn=_controlling_tty)
        os.close(ev_w)
        os.close(ctl_r)
        self.term.start()
        self._buf = b""

    def event(self, timeout_s: float) -> dict | None:
        """The next report, or None after ``timeout_s`` without one."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.ev_r], [], [], left)[0]:
                return None
            data = os.read(self.ev_r, 1 << 16)
            if not data:
                raise SystemExit(f"the app process ended without a word (exit "
                                 f"{self.proc.wait()}); its terminal's last output: "
                                 f"{self.term.tail[-600:]!r}")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        doc = json.loads(line)
        if doc.get("ev") == "error":
            self.proc.wait(30)
            raise SystemExit(f"the app process failed: {doc['msg']}")
        return doc

    def expect(self, ev: str, timeout_s: float = 120) -> dict:
        """The next report, which must be ``ev``."""
        doc = self.event(timeout_s)
        if doc is None:
            self.kill()
            raise SystemExit(f"the app process said nothing for {timeout_s:.0f} s "
                             f"(waiting for {ev})")
        if doc["ev"] != ev:
            raise SystemExit(f"the app process said {doc!r}, expected {ev}")
        return doc

    def tell(self, text: str) -> None:
        """A line on the control pipe."""
        os.write(self.ctl_w, (text + "\n").encode())

    def finish(self) -> None:
        """Wait for its last word and its exit."""
        self.expect("done")
        code = self.proc.wait(60)
        self.term.close()
        os.close(self.ev_r)
        os.close(self.ctl_w)
        if code != 0:
            raise SystemExit(f"the app process exited {code}")

    def kill(self) -> None:
        """Stop it (a failure)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- set-up
def grow(home: Path, n_blocks: int) -> tuple[list[bytes], int]:
    """``n_blocks`` new blocks of the wallet's network, each with its witness vote,
    continuing its devices' chains (their heads, spendable money and unclaimed payments
    read from the wallet's ledger) with bench/ingest.py's keys and its mix of issues,
    payments, moves and claims: (entry bodies, how many are payments to the bench
    account's devices)."""
    import random

    from ingest import DEVICES, _Dev, _Gen, bench_keys
    from nacl.signing import SigningKey

    from wallet.encoding import Kind
    from wallet.wallet import Wallet

    # The keys, drawn as bench/ingest.py's ``generate`` draws them (before any block).
    rng, (issuer, witness, mint_key) = bench_keys(SEED)

    def key() -> SigningKey:
        return SigningKey(rng.randbytes(32))

    ours = key()
    accounts: list[list[_Dev]] = [[_Dev(key(), ours) for _ in range(3)]]
    total = 1 + 3
    while total < DEVICES:
        acc_key = key()
        k = min(rng.choice([1, 1, 1, 2, 2, 3]), DEVICES - total)
        accounts.append([_Dev(key(), acc_key) for _ in range(k)])
        total += k
    mint = _Dev(mint_key, issuer)
    devs = [d for acc in accounts for d in acc]
    sibling = {d.pk: acc for acc in accounts for d in acc}
    w = Wallet.open(home)
    try:
        led = w.ledger
        opened = {k: a for k, a, _ in led.opened_devices()}
        for d in [mint, *devs]:
            head = led.head(d.pk)
            if opened.get(d.pk) != d.account or head is None:
                raise SystemExit("the wallet's network is not bench/ingest.py's (seed "
                                 f"{SEED}): device {d.pk.hex()[:12]}… differs")
            d.seq, d.prev = head.seq, head.id
            d.spendable = led.balance(d.pk).spendable
            d.inbox = [(b.id, b.amount) for b in led.unclaimed_to(d.pk)]
        g = _Gen(random.Random(SEED + 14), w.genesis, witness)
    finally:
        w.close()
    rng = g.rng
    ours_pk = {d.pk for d in accounts[0]}
    to_ours = 0
    while g.blocks < n_blocks:  # bench/ingest.py's loop
        r = rng.random()
        waiting = [d for d in rng.sample(devs, 8) if d.inbox]
        if waiting and r < 0.5:
            g.receive(waiting[0])
            continue
        if r < 0.58 or not any(d.spendable > 0 for d in rng.sample(devs, 8)):
            dst = rng.choice(devs)
            g.pay(mint, dst, rng.randrange(1_000, 200_000), Kind.ISSUE)
        else:
            src = max(rng.sample(devs, 4), key=lambda d: d.spendable)
            if src.spendable <= 0:
                continue
            sibs = [s for s in sibling[src.pk] if s is not src]
            if sibs and rng.random() < 0.15:
                dst = rng.choice(sibs)
            else:
                dst = rng.choice(devs)
                if dst is src:
                    continue
            g.pay(src, dst, rng.randrange(1, src.spendable + 1) if rng.random() < 0.2
                  else max(1, rng.randrange(1, src.spendable + 1) // 10))
        to_ours += dst.pk in ours_pk
    return g.bodies, to_ours


def relay_db(home: Path, work: Path) -> tuple[Path, bytes]:
    """A scratch copy of the relay database of the wallet's 200,000 entries
    (``bench/relay.py``'s cached ``cold_db``), with ``NEW_ENTRIES`` more of that network
    stored in it: (database, genesis)."""
    from relay import cold_db, copy_relay_db

    from server.store import SqliteRelayStore
    from wallet.encoding import entry_hash, parse_entry, parse_genesis
    from wallet.ledger import Ledger

    genesis_raw, _, db = cold_db(2 * BLOCKS)
    bodies, to_ours = grow(home, NEW_ENTRIES // 2)
    copy = copy_relay_db(db, work / "relay.db")
    network = entry_hash(genesis_raw)
    store = SqliteRelayStore(copy)
    try:
        ledger = Ledger(parse_genesis(genesis_raw), store.tables(network))
        final: set[bytes] = set()
        for i in range(0, len(bodies), 5000):
            with store.writing(network, {}, day="2026-01-01", quota=None):
                changes = ledger.add([parse_entry(b, verify=False) for b in bodies[i:i + 5000]])
            final |= {ch.block_id for ch in changes if ch.new.final}
    finally:
        store.close()
    if len(bodies) != NEW_ENTRIES or len(final) != NEW_ENTRIES // 2:
        raise SystemExit(f"the relay took {len(final)} of {len(bodies) // 2} new blocks as "
                         "final (a relay database of another run of bench/ingest.py? "
                         f"remove {db} and its .networks)")
    log(f"the relay holds {NEW_ENTRIES} entries more than the wallet ({to_ours} of the new "
        "blocks pay the bench account)")
    return copy, genesis_raw


class Entries:
    """The wallet's store, read from outside the app: how many entries it holds."""

    def __init__(self, home: Path) -> None:
        self.conn = sqlite3.connect(f"file:{home / 'wallet.db'}?mode=ro", uri=True)

    def count(self) -> int:
        """Entries now (each query a read of its own)."""
        return self.conn.execute("SELECT count(*) FROM entries").fetchone()[0]


def scratch_home() -> Path:
    """A fresh copy of the 100,000-block wallet, opened once by ``tally balance``."""
    from state import build_wallet, tally

    src = build_wallet(BLOCKS)
    home = OUT / "tui-home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(src, home)
    wall, _, done = tally(home, "balance", "--json")
    log(f"tally balance on the copy: {wall:.3f} s, {json.loads(done.stdout)['spendable']} "
        "spendable")
    return home


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Set up, measure, print the figures."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--pages", type=int, default=PAGES, help="page-downs to time")
    p.add_argument("--starts", type=int, default=STARTS, help="app starts to time")
    p.add_argument("--profile", metavar="FILE",
                   help="sample the app's threads during the sync; write where they "
                   "spend their time here")
    a = p.parse_args(argv)

    from state import PACKAGES, RelayProcess

    subprocess.run([sys.executable, "-m", "compileall", "-q", *PACKAGES], cwd=ROOT,
                   check=True)
    home = scratch_home()
    work = OUT / "tui-relay"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db, genesis_raw = relay_db(home, work)
    entries = Entries(home)
    before = entries.count()
    genesis = work / "bench.genesis"
    genesis.write_bytes(genesis_raw)
    relay = RelayProcess(db, genesis, work)
    url = f"ws://127.0.0.1:{relay.port()}"
    log(f"relay on {url} with {2 * BLOCKS + NEW_ENTRIES} entries; the wallet holds {before}")
    time.sleep(1)  # the relay settles (it is idle until the sync)
    try:
        starts: list[float] = []
        for i in range(a.starts):
            c = Child(home, "start", url, a.pages, None)
            frame = c.expect("balance_frame")["t"] - c.spawned
            c.finish()
            if c.term.balance_at is None:
                raise SystemExit("the balance never arrived on the terminal (its last "
                                 f"output: {c.term.tail[-600:]!r})")
            starts.append(c.term.balance_at - c.spawned)
            log(f"start {i + 1}: balance on the terminal {starts[-1]:.3f} s after spawning "
                f"(frame handed over at {frame:.3f} s; {c.term.bytes} bytes drawn)")
        start_s = statistics.median(starts)

        c = Child(home, "full", url, a.pages, a.profile)
        try:
            c.expect("balance_frame")
            h = c.expect("history")
            log(f"history: first rows {h['s'] * 1000:.1f} ms after the key "
                f"({h['rows']} rows read, {h['height']} on screen)")
            pg = c.expect("pages")
            ms = pg["ms"]
            if not ms:
                raise SystemExit("no page-down moved the history")
            log(f"page-down: {len(ms)} presses, mean {statistics.mean(ms):.1f} ms, median "
                f"{statistics.median(ms):.1f}, max {max(ms):.1f} ms ({pg['store_pages']} "
                f"store pages read on the way, {pg['rows']} rows read, top row {pg['top']})")
            gl = c.expect("glide")
            if gl["first_ms"]:
                log(f"with Textual's scroll animation: first frame moved after "
                    f"{statistics.mean(gl['first_ms']):.1f} ms (max {max(gl['first_ms']):.1f}),"
                    f" the page settled after {statistics.mean(gl['end_ms']):.0f} ms")
            t_sync = c.expect("sync_started")["t"]
            target = before + NEW_ENTRIES
            deadline = t_sync + SYNC_TIMEOUT_S
            last_log = time.monotonic()
            while True:
                n = entries.count()
                now = time.monotonic()
                if n >= target:
                    break
                if now > deadline:
                    c.kill()
                    raise SystemExit(f"the sync stored {n - before} of {NEW_ENTRIES} entries "
                                     f"in {SYNC_TIMEOUT_S:.0f} s")
                if c.proc.poll() is not None:
                    c.event(1)
                    raise SystemExit(f"the app process exited {c.proc.returncode} mid-sync")
                if now - last_log > 5:
                    log(f"  sync: {n - before}/{NEW_ENTRIES} entries stored after "
                        f"{now - t_sync:.1f} s")
                    last_log = now
                time.sleep(0.05)
            sync_s = now - t_sync
            c.tell(f"stop {now!r}")
            s = c.expect("sync")
            log(f"sync: {NEW_ENTRIES} entries stored {sync_s:.2f} s after the sync started "
                f"({NEW_ENTRIES / sync_s:.0f}/s); loop ticks: worst gap "
                f"{s['gap_ms_max']:.1f} ms ({s['gap_at_s']:.2f} s in), p99 "
                f"{s['gap_ms_p99']:.1f} ms over {s['ticks']}; a callback queued on the app "
                f"waited at most {s['queue_ms_max']:.1f} ms; {s['frames']} frames drawn")
            st = c.expect("settled", SETTLE_S + 60)
            log(f"the app's link said {st['links']} {st['s']:.1f} s after the sync started")
            c.finish()
        except BaseException:
            c.kill()
            raise
        got = entries.count() - before
        entries.conn.close()
        if got != NEW_ENTRIES:
            raise SystemExit(f"the sync stored {got} new entries, not {NEW_ENTRIES}")
    finally:
        relay.stop()
    print(f"start_s={start_s:.3f} history_open_s={h['s']:.3f} "
          f"page_down_ms={statistics.mean(ms):.1f} frame_gap_ms_max={s['gap_ms_max']:.1f}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
