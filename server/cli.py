"""``tally-relay``: serve networks, migrate the database, make key files (DESIGN §7, §9).

    tally-relay --db PATH --listen HOST:PORT [--network FILE … | --open]
                [--witness-key FILE] [--node-key FILE] [--tls-cert F --tls-key F]
                [--peer URL …] [--log-file FILE] [limits…]
    tally-relay migrate --db PATH
    tally-relay keygen FILE [--kind witness|node]

Secrets come from ``TALLY_PASSPHRASE`` or ``TALLY_PASSPHRASE_FILE``. Errors go to stderr
with exit status 1 (2 for a bad command line) and say what to do.

A start checks everything before it writes anything: the genesis files, the TLS files,
every key file it is given (or finds) opened with the passphrase, the database; a node
key it has to make is written only once the port is bound, so a failed start (a wrong
passphrase, say) leaves no key file sealed with the wrong passphrase behind. SIGHUP
reloads the TLS certificate and reopens ``--log-file``; it never stops the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from nacl.signing import SigningKey

from server.errors import RelayError
from server.relay import Limits, Relay, RelayConfig, read_genesis_file
from server.store import SqliteRelayStore, migrate
from server.telemetry import Telemetry
from server.tls import ServerTls
from wallet import keys as keyfiles
from wallet.collector import tune_for_long_run
from wallet.encoding import key_text
from wallet.errors import TallyError


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (say 127.0.0.1:8765)")
    return host.strip("[]") or "0.0.0.0", int(port)


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return v


def _serve_parser() -> argparse.ArgumentParser:
    d = Limits()
    p = argparse.ArgumentParser(
        prog="tally-relay",
        description="Store, forward and witness Tallystick ledgers over websockets.",
        epilog="other commands: `tally-relay migrate --db PATH`, "
               "`tally-relay keygen FILE [--kind witness|node]`",
    )
    p.add_argument("--db", required=True, type=Path, help="the relay database (SQLite file)")
    p.add_argument("--listen", required=True, type=_listen, help="HOST:PORT (port 0: any)")
    nets = p.add_mutually_exclusive_group(required=True)
    nets.add_argument("--network", action="append", type=Path, default=[], metavar="FILE",
                      help="a genesis file of a network to serve (repeatable)")
    nets.add_argument("--open", action="store_true",
                      help="serve any network whose genesis a client presents")
    p.add_argument("--witness-key", type=Path, metavar="FILE", help="vote with this key")
    p.add_argument("--node-key", type=Path, metavar="FILE",
                   help="the relay's own key (default: made beside the database)")
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve wss:// with this cert")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="…and this private key")
    p.add_argument("--peer", action="append", default=[], metavar="URL",
                   help="another relay to sync with (repeatable)")
    p.add_argument("--log-file", type=Path, metavar="FILE",
                   help="append the JSON event log here, not to stderr (SIGHUP reopens it)")
    p.add_argument("--max-message-bytes", type=int, default=d.message_bytes_max)
    p.add_argument("--max-connections", type=int, default=d.connections_max)
    p.add_argument("--max-connections-per-address", type=int,
                   default=d.connections_per_address_max)
    p.add_argument("--device-rate", type=_positive, default=d.device_rate,
                   help="messages a second per device (default %(default)s)")
    p.add_argument("--device-burst", type=_positive, default=d.device_burst)
    p.add_argument("--address-rate", type=_positive, default=d.address_rate,
                   help="messages a second per IP address (default %(default)s)")
    p.add_argument("--address-burst", type=_positive, default=d.address_burst)
    p.add_argument("--quota", type=int, default=d.quota_per_day,
                   help="blocks stored per device per UTC day; 0 for no quota "
                        "(default %(default)s)")
    p.add_argument("--max-queue", type=int, default=d.queue_messages_max,
                   help="protocol messages queued for one slow subscriber before it is "
                        "dropped (default %(default)s)")
    p.add_argument("--max-queue-entries", type=int, default=d.queue_entries_max,
                   help="fanned-out entries queued for one slow subscriber before it is "
                        "dropped (default %(default)s)")
    p.add_argument("--handshake-timeout", type=_positive, default=d.handshake_s,
                   help="seconds a connection has to finish its hello (default %(default)s)")
    p.add_argument("--vote-delay", type=float, default=0.02,
                   help="seconds to gather entries before voting (default %(default)s)")
    return p


def _node_key(a: argparse.Namespace, passphrase: str
              ) -> tuple[SigningKey, Callable[[], None] | None]:
    """The relay's node key, and, when it is new, how to write it (not done yet)."""
    if a.node_key is not None:
        return keyfiles.load_key(a.node_key, passphrase, kind="node"), None
    path = a.db.with_name(a.db.stem + ".node.key")
    if path.exists() or path.is_symlink():
        return keyfiles.load_key(path, passphrase, kind="node"), None
    if not path.parent.is_dir():
        raise RelayError(f"cannot make the node key {path}: directory {path.parent} "
                         "does not exist")
    key = SigningKey.generate()
    sealed = keyfiles.encrypt_secret(bytes(key), passphrase, kind="node",
                                     limits=keyfiles.kdf_limits())
    return key, lambda: keyfiles.write_key_file(path, sealed)


def _tls(a: argparse.Namespace) -> ServerTls | None:
    if a.tls_cert is None and a.tls_key is None:
        return None
    if a.tls_cert is None or a.tls_key is None:
        raise RelayError("wss:// needs both --tls-cert and --tls-key")
    return ServerTls(a.tls_cert, a.tls_key)


def serve_main(argv: list[str]) -> int:
    """Run the relay until SIGTERM or SIGINT (SIGHUP reloads; see the module's text).

    Every check comes before anything is written: options, genesis files, TLS files,
    the passphrase against every existing key file, then the database; a new node key
    is written (atomically, 0600) only once the port is bound.
    """
    if hasattr(signal, "SIGHUP"):  # until the loop handles it, a SIGHUP must not kill us
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    a = _serve_parser().parse_args(argv)
    if str(a.db).startswith(("postgresql:", "postgres:")):
        raise RelayError("this tally-relay keeps its data in SQLite only: give --db a file "
                         "path (PostgreSQL is planned behind the same RelayStore interface)")
    for name in ("max_message_bytes", "max_connections", "max_connections_per_address",
                 "max_queue", "max_queue_entries"):
        if getattr(a, name) <= 0:
            raise RelayError(f"--{name.replace('_', '-')} must be above 0")
    genesis = [read_genesis_file(f) for f in a.network]
    tls = _tls(a)
    passphrase = keyfiles.passphrase_from_env("Relay key passphrase: ")
    witness_key = (keyfiles.load_key(a.witness_key, passphrase, kind="witness")
                   if a.witness_key else None)
    node_key, write_node_key = _node_key(a, passphrase)
    telemetry = Telemetry(path=a.log_file)
    store = SqliteRelayStore(a.db, create=True)
    try:
        limits = Limits(
            message_bytes_max=a.max_message_bytes, connections_max=a.max_connections,
            connections_per_address_max=a.max_connections_per_address,
            device_rate=a.device_rate, device_burst=a.device_burst,
            address_rate=a.address_rate, address_burst=a.address_burst,
            quota_per_day=a.quota or None, handshake_s=a.handshake_timeout,
            queue_messages_max=a.max_queue, queue_entries_max=a.max_queue_entries,
        )
        config = RelayConfig(
            host=a.listen[0], port=a.listen[1], node_key=node_key, genesis=genesis,
            open=a.open, witness_key=witness_key, tls_files=tls, limits=limits,
            vote_delay_s=a.vote_delay, peers=a.peer,
        )
        relay = Relay(config, store, telemetry)
    except BaseException:
        store.close()
        telemetry.close()
        raise
    if witness_key is not None and not any(
        bytes(witness_key.verify_key) in n.genesis.witnesses for n in relay.networks.values()
    ) and not a.open:
        relay.telemetry.log("warning", message="the witness key is not a witness of any "
                            "network served: this relay will not vote")
    tune_for_long_run()  # a full collection would stall every delivery
    try:
        asyncio.run(relay.run(on_listening=write_node_key))
    except BaseException:
        if not relay.shut_down:  # it failed to start (the port taken, say)
            store.close()
        raise
    finally:
        telemetry.close()
    if relay.failure is not None:
        raise RelayError(f"the relay stopped: its database failed ({relay.failure}); what "
                         "was acknowledged is on disk, restart it once the disk is fixed")
    return 0


def migrate_main(argv: list[str]) -> int:
    """Create or upgrade the relay's schema."""
    p = argparse.ArgumentParser(prog="tally-relay migrate",
                                description="Create or upgrade the relay database's schema.")
    p.add_argument("--db", required=True, type=Path, help="the relay database (SQLite file)")
    a = p.parse_args(argv)
    if str(a.db).startswith(("postgresql:", "postgres:")):
        raise RelayError("only SQLite databases can be migrated by this tally-relay")
    tty = sys.stderr.isatty()

    def progress(text: str) -> None:
        print(("\r" if tty else "") + f"moving {text}", end="" if tty else "\n",
              file=sys.stderr, flush=True)

    before, after = migrate(a.db, progress)
    if tty:
        print(file=sys.stderr)
    if before == after:
        print(f"{a.db}: schema version {after}, up to date")
    else:
        print(f"{a.db}: schema version {before} → {after}")
    return 0


def keygen_main(argv: list[str]) -> int:
    """Make an encrypted key file and print its public key."""
    p = argparse.ArgumentParser(prog="tally-relay keygen",
                                description="Make a relay key file; prints its public key.")
    p.add_argument("file", type=Path, help="the key file to write (never overwritten)")
    p.add_argument("--kind", choices=("witness", "node"), default="witness")
    a = p.parse_args(argv)
    if a.file.exists() or a.file.is_symlink():
        raise RelayError(f"refusing to overwrite the existing key file {a.file}")
    if not a.file.parent.is_dir():
        raise RelayError(f"cannot write key file {a.file}: directory {a.file.parent} "
                         "does not exist")
    passphrase = keyfiles.passphrase_from_env("Passphrase for the new key: ")
    key = SigningKey.generate()
    keyfiles.save_key(a.file, key, passphrase, kind=a.kind, limits=keyfiles.kdf_limits())
    print(key_text(bytes(key.verify_key)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``tally-relay`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"migrate": migrate_main, "keygen": keygen_main, "serve": serve_main}
    run = serve_main
    if argv and argv[0] in commands:
        run = commands[argv.pop(0)]
    try:
        return run(argv)
    except TallyError as exc:
        print(f"tally-relay: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
