"""Helpers for tests that run the real ``tally`` command in subprocesses.

Every call is a new process with ``TALLY_INSECURE_FAST_KDF=1`` (cheap key files) and
``TALLY_PASSPHRASE`` set, stdin not a terminal, and no other ``TALLY_*`` variable of the
caller's environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wallet.encoding import Genesis

PASSPHRASE = "correct horse battery"
_SCRIPT = Path(sys.executable).with_name("tally")
TALLY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tui.cli"]
PYCACHE = os.path.join(tempfile.gettempdir(), "tallystick-test-pycache")


def tally_env(**extra: str | None) -> dict[str, str]:
    """The environment of a ``tally`` process; ``None`` values remove a variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(TALLY_INSECURE_FAST_KDF="1", TALLY_PASSPHRASE=PASSPHRASE)
    # Compiled modules cached outside the repo, so each process starts faster.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def command(home: Path | None, *args: Any) -> list[str]:
    """The argv of ``tally --home HOME ARGS``."""
    pre = ["--home", str(home)] if home is not None else []
    return [*TALLY, *pre, *map(str, args)]


def run(home: Path | None, *args: Any, env: dict[str, str] | None = None,
        stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one ``tally`` command to completion."""
    return subprocess.run(command(home, *args), env=env or tally_env(), input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)


def run_many(calls: list[tuple[Any, ...]], env: dict[str, str] | None = None
             ) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands concurrently; each call is ``(home, *args)``."""
    procs = [
        (c, subprocess.Popen(command(c[0], *c[1:]), env=env or tally_env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True))
        for c in calls
    ]
    out = []
    for c, p in procs:
        so, se = p.communicate(timeout=60)
        out.append(subprocess.CompletedProcess(command(c[0], *c[1:]), p.returncode, so, se))
    return out


def one_json(text: str) -> Any:
    """Parse stdout that must be exactly one JSON document (json.loads refuses extra data)."""
    return json.loads(text)


def check_ok(p: subprocess.CompletedProcess[str]) -> None:
    """A successful command: exit 0 and nothing on stderr."""
    assert p.returncode == 0, f"{p.args[1:]} exited {p.returncode}: {p.stderr}"
    assert p.stderr == "", f"{p.args[1:]} wrote to stderr: {p.stderr}"


def ok(home: Path | None, *args: Any, **kw: Any) -> str:
    """Run a command that must succeed; its stdout for people."""
    p = run(home, *args, **kw)
    check_ok(p)
    return p.stdout


def tj(home: Path | None, *args: Any, **kw: Any) -> Any:
    """Run a command with ``--json`` that must succeed; its one JSON document."""
    p = run(home, *args, "--json", **kw)
    check_ok(p)
    return one_json(p.stdout)


def check_failed(p: subprocess.CompletedProcess[str], *, as_json: bool = False) -> str:
    """A refused command: exit 1, one ``tally: error:`` line on stderr; the message."""
    assert p.returncode == 1, f"{p.args[1:]} exited {p.returncode}: {p.stdout} {p.stderr}"
    assert "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("tally: error: "), p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.endswith("\n"), p.stderr
    message = p.stderr[len("tally: error: ") : -1]
    if as_json:
        assert one_json(p.stdout) == {"error": message}
    else:
        assert p.stdout == "", p.stdout
    return message


def fail(home: Path | None, *args: Any, **kw: Any) -> str:
    """Run a command that must be refused; the message after ``tally: error:``."""
    return check_failed(run(home, *args, **kw), as_json="--json" in args)


@dataclass
class Home:
    """One wallet home and, once it has a device, its address."""

    path: Path
    address: str = ""
    phrase: str = ""


def new_wallets(genesis: Path, *homes: Path, label: str = "main") -> list[Home]:
    """Join each home to the network and make its account and device (concurrently)."""
    for p in run_many([(h, "network", "join", genesis) for h in homes]):
        check_ok(p)
    out = []
    for h, p in zip(homes, run_many([(h, "init", "--label", label, "--json") for h in homes]),
                    strict=True):
        check_ok(p)
        doc = one_json(p.stdout)
        out.append(Home(h, doc["address"], doc["phrase"]))
    return out


def carry(src: Path, dst: Path, file: Path, *, for_address: str | None = None) -> dict:
    """Carry a bundle from one home to another; the import's JSON document."""
    extra = ["--for", for_address] if for_address else []
    tj(src, "bundle", "export", file, *extra)
    return tj(dst, "bundle", "import", file)


def _rows(conn: sqlite3.Connection, sql: str) -> str:
    h = hashlib.sha256()
    for row in conn.execute(sql):
        h.update(repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)).encode())
    return h.hexdigest()


def store_snapshot(home: Path) -> dict[str, Any]:
    """What the store holds: entry count, a digest of every body, and of every table."""
    conn = sqlite3.connect(str(Path(home) / "wallet.db"))
    try:
        return {
            "entries": conn.execute("SELECT count(*) FROM entries").fetchone()[0],
            "bodies": _rows(conn, "SELECT id, body FROM entries ORDER BY id"),
            "entries_table": _rows(conn, "SELECT * FROM entries ORDER BY ref"),
            "devices_table": _rows(conn, "SELECT * FROM devices ORDER BY ref"),
            "meta_table": _rows(conn, "SELECT * FROM meta ORDER BY key"),
        }
    finally:
        conn.close()


# In-process set-up (the Wallet API the command line uses), for tests whose subject is
# another command: much cheaper than a process per step.
def api_wallets(genesis: Path, *homes: Path, label: str = "main") -> list[Home]:
    """Join each home to the network and make its account and device."""
    from wallet.keys import FAST_INSECURE
    from wallet.wallet import Wallet

    raw = Path(genesis).read_bytes()
    out = []
    for h in homes:
        w = Wallet.join(h, raw)
        try:
            phrase = w.init(PASSPHRASE, label=label, limits=FAST_INSECURE)
            out.append(Home(h, w.address().text(), phrase))
        finally:
            w.close()
    return out


def api_network(tmp_path: Path, name: str) -> Genesis:
    """A q = 0 network: its issuer's wallet in ``tmp_path/issuer``, its genesis file in
    ``tmp_path/g`` (for ``api_wallets``)."""
    from nacl.signing import SigningKey

    from wallet.encoding import Genesis, Policy
    from wallet.keys import FAST_INSECURE
    from wallet.wallet import Wallet

    issuer = SigningKey.generate()
    g = Genesis(name, "EUR", 2, bytes(issuer.verify_key), (), 0,
                Policy(5000, 10000, 100000, 3600)).signed(issuer)
    Wallet.create_network(tmp_path / "issuer", g, issuer, PASSPHRASE,
                          limits=FAST_INSECURE).close()
    (tmp_path / "g").write_bytes(g.raw)
    return g


def api_fund(issuer: Path, w: Home, minor: int) -> bytes:
    """Issue ``minor`` units to a wallet, carry the entries and receive; the issue's id."""
    from wallet.address import parse_address
    from wallet.wallet import Wallet

    to = parse_address(w.address)
    iw = Wallet.open(issuer)
    try:
        issue, _ = iw.pay(to, minor, PASSPHRASE)
        bodies = iw.bodies(iw.export_ids(to))
    finally:
        iw.close()
    dst = Wallet.open(w.path)
    try:
        dst.ingest_bodies(bodies)
        assert issue.id in [b.claim for b, _ in dst.receive(PASSPHRASE)]
    finally:
        dst.close()
    return issue.id
