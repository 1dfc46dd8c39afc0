"""Takings benchmark (issue 15): a till with 100,000 takings over 30 days.

    python bench/takings.py [--takings N] [--payers P]

Builds once (cached under ``bench/out/``) a q = 1 network in which 300 payer
accounts, funded by the mint, pay one till 100,000 times, every block with its witness
vote (so the takings turn final as they arrive): the till is a real wallet home
(``Wallet.join`` + ``init``), and the entries go in by ``Wallet.ingest_bodies`` in
batches of 20,000, the path of ``tally bundle import`` and sync, each batch deciding on
its payments. The takings' arrival times are then spread evenly over the 30 days before
now (the store's ``taken_at``), as if they had come in over a month.

Then, on a copy of that home, each in a fresh ``tally`` process, wall clock:

- ``takings_day_s``: ``tally takings --json`` for one day (the 15th; about 3,300 takings);
- ``takings_month_s``: ``tally takings --json`` for the 30 days;

and in this process, ``decide_ms``: the time ``Takings.decide_new`` takes to decide one
more payment arriving at that size (the exposure query and the insert), the mean over
20 payments each ingested on its own (``Wallet.ingest_bodies``).

The packages are byte-compiled first, as an installed ``tally`` is. The last line is
``takings_day_s=… takings_month_s=… decide_ms=…``; goals ``takings_day_s < 0.3``,
``takings_month_s < 2``, ``decide_ms < 5``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from ingest import _Dev, _Gen, bench_keys, log  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from wallet import keys as keyfiles  # noqa: E402
from wallet.encoding import Genesis, Kind, Policy  # noqa: E402
from wallet.wallet import Wallet  # noqa: E402

OUT = HERE / "out"
PASSPHRASE = "bench passphrase"
DAYS = 30
DAY_S = 86_400
BATCH_ENTRIES = 20_000
"""Entries ingested at a time while building (as a sync's catch-up batches them)."""
DECIDE_SAMPLES = 20
SEED = 7
PACKAGES = ("wallet", "sync", "server", "tui")


def build(home: Path, n: int, payers: int) -> list[bytes]:
    """The till's home with ``n`` takings from ``payers`` accounts; the bodies of
    ``DECIDE_SAMPLES`` more payments (with their votes) kept for ``decide_ms``."""
    rng, (issuer, witness, mint_key) = bench_keys(SEED)
    genesis = Genesis("takings", "EUR", 2, bytes(issuer.verify_key),
                      (bytes(witness.verify_key),), 1,
                      Policy(5_000, 10_000, 100_000, DAY_S)).signed(issuer)
    shutil.rmtree(home, ignore_errors=True)
    w = Wallet.join(home, genesis.raw)
    try:
        w.init(PASSPHRASE, label="till", limits=keyfiles.FAST_INSECURE)
        till = _Dev(SigningKey(rng.randbytes(32)), SigningKey(rng.randbytes(32)))
        till.pk, till.account = w.device or b"", w.account or b""  # pays go to this home
    finally:
        w.close()
    g = _Gen(random.Random(SEED), genesis, witness)
    mint = _Dev(mint_key, issuer)
    g.open(mint, "mint")
    devs = [_Dev(SigningKey(rng.randbytes(32)), SigningKey(rng.randbytes(32)))
            for _ in range(payers)]
    per_payer = -(-(n + DECIDE_SAMPLES) // payers)
    for i, d in enumerate(devs):
        g.open(d, f"payer-{i}")
        g.pay(mint, d, per_payer * 5_000, Kind.ISSUE)
        g.receive(d)
    log(f"signing {n} payments to the till (+ a witness vote each)…")
    t0 = time.perf_counter()
    for i in range(n + DECIDE_SAMPLES):
        if i == n:
            kept_from = len(g.bodies)
        d = devs[i % payers]
        g.pay(d, till, rng.randrange(50, 5_000))
    kept = g.bodies[kept_from:]
    bodies = g.bodies[:kept_from]
    log(f"signed in {time.perf_counter() - t0:.1f} s; the till takes them in…")
    w = Wallet.open(home)
    try:
        t0 = time.perf_counter()
        for at in range(0, len(bodies), BATCH_ENTRIES):
            w.ingest_bodies(bodies[at:at + BATCH_ENTRIES])
            log(f"  {min(at + BATCH_ENTRIES, len(bodies))}/{len(bodies)} entries")
        log(f"ingested in {time.perf_counter() - t0:.1f} s")
        count = w.store.conn.execute("SELECT count(*) FROM takings").fetchone()[0]
        if count != n:
            raise SystemExit(f"the till holds {count} takings, not {n}")
        start = int(time.time()) - DAYS * DAY_S
        with w.store.transaction():  # as if they had come in over the month
            w.store.conn.execute("UPDATE takings SET taken_at = ? + (rowid - 1) * ? / ?",
                                 (start, DAYS * DAY_S, n))
        w.store.checkpoint()
    finally:
        w.close()
    (home / "bench-decide.json").write_text(json.dumps([b.hex() for b in kept]))
    return kept


def tally(home: Path, *args: str) -> tuple[float, dict]:
    """One ``tally … --json`` in a fresh process: its wall time and document."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env["TALLY_PASSPHRASE"] = PASSPHRASE
    out = home.parent / "takings-out.json"
    # stdout to a file, as a script saving the report: timing a pipe read by
    # subprocess (and its decoding of 50 MB as text) would time this harness
    with open(out, "wb") as f:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "tui.cli", "--home", str(home), *args,
                            "--json"], stdout=f, stderr=subprocess.PIPE, env=env, cwd=ROOT,
                           check=False)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"tally {' '.join(args)} failed: {p.stderr.decode().strip()}")
    return wall, json.loads(out.read_bytes())


def main(argv: list[str] | None = None) -> int:
    """Build (once), then measure; the figures on the last line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--takings", type=int, default=100_000)
    ap.add_argument("--payers", type=int, default=300)
    a = ap.parse_args(argv)
    for pkg in PACKAGES:
        compileall.compile_dir(str(ROOT / pkg), quiet=1)
    cached = OUT / f"takings-{a.takings}-{a.payers}"
    if not (cached / "bench-decide.json").exists():
        log(f"building {cached} …")
        build(cached, a.takings, a.payers)
    else:
        log(f"using cached {cached}")
    home = OUT / "takings-run"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(cached, home)
    tally(home, "balance")  # warm the disk cache, as a till that runs all day is
    first = time.localtime(time.time() - DAYS * DAY_S)  # the day the first one came
    day = time.strftime("%Y-%m-%d", time.localtime(time.time() - (DAYS // 2) * DAY_S))
    day_s, doc = tally(home, "takings", "--since", day, "--until", day)
    log(f"one day ({day}): {len(doc['takings'])} takings in {day_s:.3f} s")
    month_s, doc = tally(home, "takings", "--since", time.strftime("%Y-%m-%d", first),
                         "--until", time.strftime("%Y-%m-%d"))
    log(f"the month: {len(doc['takings'])} takings in {month_s:.3f} s")
    if len(doc["takings"]) != a.takings:
        raise SystemExit(f"the month shows {len(doc['takings'])} takings, not {a.takings}")
    kept = [bytes.fromhex(h) for h in json.loads((home / "bench-decide.json").read_text())]
    w = Wallet.open(home)
    spent: list[float] = []
    try:
        decide = w.takings.decide_new

        def timed(*args: object, **kw: object) -> object:
            t0 = time.perf_counter()
            try:
                return decide(*args, **kw)  # type: ignore[arg-type]
            finally:
                spent.append(time.perf_counter() - t0)

        w.takings.decide_new = timed  # type: ignore[method-assign]
        for at in range(0, len(kept), 2):  # a payment and its vote, one at a time
            w.ingest_bodies(kept[at:at + 2])
    finally:
        w.close()
    if len(spent) != len(kept) // 2:
        raise SystemExit(f"decided {len(spent)} payments, not {len(kept) // 2}")
    decide_ms = 1000 * sum(spent) / len(spent)
    log(f"deciding one payment: mean {decide_ms:.2f} ms, worst {1000 * max(spent):.2f} ms")
    print(f"takings_day_s={day_s:.3f} takings_month_s={month_s:.3f} decide_ms={decide_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
