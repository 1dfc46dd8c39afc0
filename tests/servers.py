"""Throwaway servers for the relay-at-scale tests (issue 17): a real PostgreSQL made with
``initdb`` and started with ``pg_ctl`` in a temporary folder, listening on a unix socket
there and a free loopback port, and a real ``redis-server`` on a free loopback port.
Each is stopped (and its folder removed) when its context ends. No mocks: what the
tests check runs against the engines operators run.

PostgreSQL refuses to run as root; as root, the servers run as the ``postgres`` user
the Debian package makes (``runuser``). ``./dev test`` installs the Debian packages when
they are missing; without them these helpers raise, they never skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 30.0
PG_USER = "tally"
"""The superuser of a throwaway cluster."""


class ServerMissing(RuntimeError):
    """An engine's binaries are not on the machine: ``./dev test`` installs them."""


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server binaries (the newest installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise ServerMissing("no PostgreSQL server binaries (initdb): as root on Debian, "
                        "`./dev test` installs the postgresql package")


def _as_server_user(argv: list[str]) -> list[str]:
    """Run as ``postgres`` when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _wait_for(what: str, ready: Callable[[], bool], proc_log: Path | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    said = proc_log.read_text() if proc_log and proc_log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {START_TIMEOUT_S:g} s: {said[-2000:]}")


@dataclass
class Postgres:
    """A running throwaway cluster."""

    folder: Path
    port: int

    @property
    def socket_dir(self) -> Path:
        """Where its unix socket is."""
        return self.folder / "sock"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq URL reaching it over its unix socket."""
        return f"postgresql://{PG_USER}@/{database}?host={self.socket_dir}&port={self.port}"

    def tcp_dsn(self, database: str = "postgres") -> str:
        """A libpq URL reaching it over loopback TCP."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def createdb(self, name: str) -> str:
        """A new database in the cluster; its URL."""
        subprocess.run([str(postgres_bin() / "createdb"), "-h", str(self.socket_dir),
                        "-p", str(self.port), "-U", PG_USER, name], check=True,
                       capture_output=True, text=True)
        return self.dsn(name)

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``pg_ctl`` on this cluster (``stop``, ``start``…)."""
        return subprocess.run(_as_server_user(
            [str(postgres_bin() / "pg_ctl"), "-D", str(self.folder / "data"), "-w", *args]),
            capture_output=True, text=True, check=False, timeout=START_TIMEOUT_S + 5)

    def start(self) -> None:
        """Start it (again, after ``stop``)."""
        opts = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=on -c max_connections=200")
        p = self.pg_ctl("-l", str(self.folder / "log"), "-o", opts, "start")
        if p.returncode != 0:
            log = self.folder / "log"
            raise RuntimeError(f"pg_ctl start failed: {p.stderr}{p.stdout}"
                               f"{log.read_text() if log.exists() else ''}")

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``fast``; ``immediate`` is a crash)."""
        self.pg_ctl("-m", mode, "stop")


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Postgres]:
    """A new PostgreSQL cluster, started; stopped and removed at the end."""
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="tally-pg-"))
    os.chmod(folder, 0o755)
    (folder / "sock").mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        shutil.chown(folder / "sock", "postgres", "postgres")
    pg = Postgres(folder, free_port())
    try:
        made = subprocess.run(_as_server_user(
            [str(binaries / "initdb"), "-D", str(folder / "data"), "-U", PG_USER,
             "-A", "trust", "-E", "UTF8", "--no-sync"]),
            capture_output=True, text=True, check=False, timeout=120)
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stderr}{made.stdout}")
        pg.start()
        yield pg
    finally:
        pg.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Redis:
    """A running throwaway ``redis-server``."""

    folder: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, after ``stop``), with no persistence: a bus, not a store."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise ServerMissing("no redis-server: as root on Debian, `./dev test` installs "
                                "the redis-server package")
        log = self.folder / "log"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ready() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
            return False

        _wait_for("redis-server", ready, log)

    def stop(self) -> None:
        """Stop it (SIGKILL: Redis going away, as a crash would)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def throwaway_redis() -> Iterator[Redis]:
    """A new ``redis-server``, started; stopped and removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="tally-redis-"))
    r = Redis(folder, free_port())
    try:
        r.start()
        yield r
    finally:
        r.stop()
        shutil.rmtree(folder, ignore_errors=True)
