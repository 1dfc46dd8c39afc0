"""Structured logs (one JSON line per event, on stderr or in a log file) and Prometheus
metrics."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

from server.errors import RelayError

METRIC_HELP = {
    "tally_relay_connections": ("gauge", "Open websocket connections."),
    "tally_relay_connections_total": ("counter", "Websocket connections accepted."),
    "tally_relay_networks": ("gauge", "Networks served."),
    "tally_relay_messages_in_total": ("counter", "Websocket messages received."),
    "tally_relay_entries_in_total": ("counter", "New entries accepted and stored."),
    "tally_relay_entries_out_total": ("counter", "Entries fanned out to subscribers."),
    "tally_relay_refusals_total": ("counter", "Conversations ended by the relay, by reason."),
    "tally_relay_votes_total": ("counter", "Witness votes signed by this relay."),
    "tally_relay_entries_stored": ("gauge", "Entries stored, all networks."),
}


class Telemetry:
    """Counters and gauges for ``/metrics``, and the relay's event log."""

    def __init__(self, stream: IO[str] | None = None, *, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            stream = _open_log(self.path)
        self.stream = stream if stream is not None else sys.stderr
        self.values: defaultdict[tuple[str, tuple[tuple[str, str], ...]], float] = (
            defaultdict(float))

    def count(self, name: str, n: float = 1, **labels: str) -> None:
        """Add ``n`` to a counter (or a gauge)."""
        self.values[(name, tuple(sorted(labels.items())))] += n

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        self.values[(name, tuple(sorted(labels.items())))] = value

    def get(self, name: str, **labels: str) -> float:
        """A metric's current value (0 when never set)."""
        return self.values.get((name, tuple(sorted(labels.items()))), 0)

    def log(self, event: str, **fields: Any) -> None:
        """Write one JSON line: the time, the event and its fields."""
        doc = {"ts": round(time.time(), 3), "event": event, **fields}
        try:
            self.stream.write(json.dumps(doc, default=str) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not stop the relay

    def reopen(self) -> Path | None:
        """Reopen the log file (after logrotate moved it away); the file, or None when
        logging to a stream. Raises ``RelayError``, and keeps the old file, when the new
        one cannot be opened."""
        if self.path is None:
            return None
        new = _open_log(self.path)
        old, self.stream = self.stream, new
        try:
            old.close()
        except OSError as exc:
            self.log("error", where="log file", error=f"closing the old log file: {exc}")
        return self.path

    def close(self) -> None:
        """Close the log file (a stream given is left open)."""
        if self.path is not None:
            self.stream.close()

    def prometheus(self) -> str:
        """Every metric in the Prometheus text exposition format."""
        by_name: defaultdict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = (
            defaultdict(list))
        for (name, labels), value in self.values.items():
            by_name[name].append((labels, value))
        for name in METRIC_HELP:
            by_name.setdefault(name, [])
        lines: list[str] = []
        for name in sorted(by_name):
            kind, text = METRIC_HELP.get(name, ("untyped", name))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            rows = by_name[name] or [((), 0.0)]
            for labels, value in sorted(rows):
                lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                num = int(value) if float(value).is_integer() else value
                lines.append(f"{name}{{{lab}}} {num}" if lab else f"{name} {num}")
        return "\n".join(lines) + "\n"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _open_log(path: Path) -> IO[str]:
    """A log file opened to append, line by line."""
    try:
        return open(path, "a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise RelayError(f"cannot open the log file {path}: {exc.strerror or exc}") from exc
