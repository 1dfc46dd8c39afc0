"""The bundle sections a wallet keeps ready, so that ``bundle export --for`` costs only
what is new since the last one.

What a payee needs from us (``wallet.closure``) is, before anything payee-specific, the
closure of our own account's chains: the history of the money that funded them, which
on a wallet that has traded for a year is most of its network. That part is the same
for every payee and only grows, so the wallet keeps it encoded as self-checking bundle
sections (``wallet.bundle``) in a file in its home — made by its first ``bundle export
--for``, so that a wallet that never exports spends no disk on it — and grows it with
each commit (``wallet.closure.grow``: only the entries the commit added to it). A bundle is then the
header, the file's sections copied by the kernel, and one section for the payee.

On disk: ``export-<generation>.sections`` holds the sections; the store keeps, in the
transaction of the commit the sections stand for, the closure's state (``export_tops``,
``export_routed``) and, in ``meta`` under ``export``, the file's generation, its size
and its sections. Bytes past the recorded size were appended by a commit that did not
happen and are cut off; a file shorter than recorded, or a store without the record, is
rebuilt from the ledger. When sections pile up, the small ones at the end are merged
into a file of the next generation, which the record then names.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wallet.bundle import (
    SECTION_OVERHEAD,
    SectionsFile,
    copy_span,
    dependency_order,
    encode_section,
    join_sections,
)
from wallet.closure import ClosureState, grow
from wallet.encoding import parse_entry

META_KEY = "export"
SECTIONS_MAX = 16
"""Sections kept before the newer half of them is merged into one."""
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS export_tops (dev INTEGER PRIMARY KEY, top INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS export_routed (dev INTEGER PRIMARY KEY)",
)
"""Statements run one by one (``executescript`` would commit a caller's transaction)."""


@dataclass(frozen=True, slots=True)
class _Record:
    """What the store says the file holds: each section as (bytes, entries)."""

    generation: int
    sections: tuple[tuple[int, int], ...]
    mark: int

    @property
    def size(self) -> int:
        return sum(b for b, _ in self.sections)

    @property
    def entries(self) -> int:
        return sum(n for _, n in self.sections)

    def to_json(self) -> str:
        return json.dumps({"generation": self.generation, "mark": self.mark,
                           "sections": [list(s) for s in self.sections]})

    @classmethod
    def from_json(cls, raw: bytes) -> _Record:
        d = json.loads(raw)
        return cls(int(d["generation"]), tuple((int(b), int(n)) for b, n in d["sections"]),
                   int(d["mark"]))


class ExportCache:
    """The sections of our chains' closure, kept in ``home`` beside the store whose
    connection is ``conn`` (its tables are made by the first ``update``)."""

    def __init__(self, home: Path, conn: sqlite3.Connection) -> None:
        self.home = Path(home)
        self.conn = conn

    def _path(self, generation: int) -> Path:
        return self.home / f"export-{generation}.sections"

    def _record(self) -> _Record | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
        if row is None:
            return None
        rec = _Record.from_json(bytes(row[0]))
        path = self._path(rec.generation)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        if size < rec.size:
            return None
        if size > rec.size:  # appended by a commit that did not happen
            os.truncate(path, rec.size)
        return rec

    def ready(self) -> bool:
        """True when the sections exist and are what the store says."""
        return self._record() is not None

    def _state(self, rec: _Record | None) -> ClosureState:
        if rec is None:
            return ClosureState()
        return ClosureState(
            dict(self.conn.execute("SELECT dev, top FROM export_tops")),
            {d for (d,) in self.conn.execute("SELECT dev FROM export_routed")}, rec.mark)

    def update(self, roots: Iterable[bytes]) -> SectionsFile:
        """Grow the sections to the closure of ``roots`` (our chains' tips) over the
        store as it is, inside the caller's transaction: the file is appended to (and
        synced) first, and the record is written in the transaction, so the file is
        what the store says once it commits. Returns the sections as they now are."""
        for statement in SCHEMA:  # here, in the transaction that first writes them
            self.conn.execute(statement)
        rec = self._record()
        if rec is None:
            self.conn.execute("DELETE FROM export_tops")
            self.conn.execute("DELETE FROM export_routed")
            rec = _Record(_next_generation(self.home), (), 0)
            self._path(rec.generation).write_bytes(b"")
        before = self._state(rec if rec.sections or rec.mark else None)
        after, bodies = grow(self.conn, before, roots)
        sections = list(rec.sections)
        path = self._path(rec.generation)
        if bodies:
            section = encode_section([e.raw for e in dependency_order(
                parse_entry(b, verify=False) for b in bodies)])
            with open(path, "ab") as f:
                f.write(section)
                f.flush()
                os.fsync(f.fileno())
            sections.append((len(section), len(bodies)))
        generation = rec.generation
        if len(sections) > SECTIONS_MAX:
            generation, sections = self._merged(rec.generation, sections)
        self._save(before, after)
        new = _Record(generation, tuple(sections), after.mark)
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET "
            "value = excluded.value", (META_KEY, new.to_json().encode()))
        return SectionsFile(self._path(generation), new.size, len(sections), new.entries)

    def _save(self, before: ClosureState, after: ClosureState) -> None:
        self.conn.executemany(
            "INSERT INTO export_tops(dev, top) VALUES(?, ?) ON CONFLICT(dev) DO UPDATE "
            "SET top = excluded.top",
            [(d, t) for d, t in after.top.items() if before.top.get(d) != t])
        self.conn.executemany("INSERT OR IGNORE INTO export_routed(dev) VALUES(?)",
                              [(d,) for d in after.routed - before.routed])

    def _merged(self, generation: int, sections: list[tuple[int, int]]
                ) -> tuple[int, list[tuple[int, int]]]:
        """The newer half of the sections merged into one, in a file of the next
        generation (the older half copied as it is)."""
        keep = len(sections) // 2
        kept = sum(b for b, _ in sections[:keep])
        old, new = self._path(generation), self._path(generation + 1)
        with open(old, "rb") as src:
            src.seek(kept)
            tail = src.read(sum(b for b, _ in sections[keep:]))
        parts, pos = [], 0
        for size, _ in sections[keep:]:
            parts.append(tail[pos : pos + size])
            pos += size
        merged = join_sections(parts)
        count = sum(n for _, n in sections[keep:])
        prefix = SectionsFile(old, kept, keep, 0)
        with open(new, "wb") as f:
            copy_span(prefix, f.fileno())
            f.write(merged)
            f.flush()
            os.fsync(f.fileno())
        assert len(merged) == sum(b for b, _ in sections[keep:]) - SECTION_OVERHEAD * (
            len(sections) - keep - 1), "a merged section holds its parts' entries"
        return generation + 1, [*sections[:keep], (len(merged), count)]

    def forget_others(self) -> None:
        """Remove section files of other generations than the recorded one (left by a
        merge, once its record committed)."""
        rec = self._record()
        for p in self.home.glob("export-*.sections"):
            if rec is None or p != self._path(rec.generation):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    def differences(self, roots: Iterable[bytes]) -> list[str]:
        """What the sections hold beside the closure of ``roots`` computed afresh, in
        words (empty when they agree, or when there are no sections): for ``tally
        doctor``."""
        from wallet.bundle import decode_sections
        from wallet.errors import BundleError

        rec = self._record()
        if rec is None:
            return []
        data = self._path(rec.generation).read_bytes()[: rec.size]
        try:
            held, _ = decode_sections(data, len(rec.sections), " of the export sections")
        except BundleError as exc:
            return [f"export sections: {exc}", f"(delete {self._path(rec.generation)}: the "
                    "next `bundle export --for` makes the sections again)"]
        got = {parse_entry(b, verify=False).id for b in held}
        _, bodies = grow(self.conn, ClosureState(), roots)
        want = {parse_entry(b, verify=False).id for b in bodies}
        out = []
        if len(held) != len(got):
            out.append(f"export sections: {len(held) - len(got)} entries held twice")
        if want - got:
            out.append(f"export sections: {len(want - got)} entries of the closure missing")
        if got - want:
            out.append(f"export sections: {len(got - want)} entries outside the closure")
        return out + ([f"(delete {self._path(rec.generation)}: the next `bundle export "
                       "--for` makes the sections again)"] if out else [])

    def extra(self, sections: SectionsFile, roots: Iterable[bytes]) -> list[bytes]:
        """What a bundle adds to the sections for these payee-specific roots (its own
        section, dependencies first); nothing is stored."""
        rec = self._record()
        assert rec is not None and rec.size == sections.size, "the sections were updated"
        _, bodies = grow(self.conn, self._state(rec), roots)
        return [e.raw for e in dependency_order(parse_entry(b, verify=False) for b in bodies)]


def _next_generation(home: Path) -> int:
    gens = [int(p.stem.split("-", 1)[1]) for p in home.glob("export-*.sections")
            if p.stem.split("-", 1)[1].isdigit()]
    return max(gens, default=0) + 1
