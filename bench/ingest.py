"""Bulk-ingest benchmark: merge a 100,000-block bundle into an empty wallet.

    python bench/ingest.py [--blocks N] [--seed S] [--regen]

A q = 1 network (one witness) with an issuing device and about 200 devices in ~110
accounts: the mint issues, devices receive, pay each other and move money between their
own devices; every block gets its own witness vote, so a bundle of N blocks carries 2N
entries. The bundle is generated once (not timed) and cached under ``bench/out/``, keyed
by N and the seed.

The target wallet is made with ``Wallet.join`` on the genesis and ``restore`` from the
recovery phrase of one of the bundle's accounts, so ``tally balance`` has that account's
devices (and their money) to show. Then, timed from opening the bundle to the final
commit: ``read_bundle`` + ``Wallet.ingest_bodies``, the real path of ``tally bundle
import`` (every signature verified, every status derived, one SQLite commit).

It prints, from the same run:

- ``entries_per_s``: entries (blocks and votes) merged per second, bundle open → commit;
- ``verify_per_s``: raw ``VerifyKey.verify`` calls per second on one core, over the same
  entries (keys prebuilt, nothing else in the loop);
- ``ratio`` = entries_per_s / verify_per_s (goal ≥ 0.6), ``cores`` = the verification
  threads the merge used;
- ``reopen_s``: wall time of ``tally balance --json`` on that wallet in a fresh process
  (goal < 1 s);
- ``disk_ratio``: the wallet home's bytes on disk after a WAL checkpoint over the
  entries' own signed bytes (goal ≤ 2.5).

The last line is ``entries_per_s=… verify_per_s=… ratio=… cores=… reopen_s=…
disk_ratio=…``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nacl.public import SealedBox
from nacl.signing import SigningKey, VerifyKey

from wallet import keys as keyfiles
from wallet.bundle import read_bundle, write_bundle
from wallet.encoding import (
    SIG_BYTES,
    Block,
    Genesis,
    Kind,
    Policy,
    Vote,
    device_signature,
    entry_hash,
    key_text,
    parse_entry,
)
from wallet.wallet import Wallet, verify_threads

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PASSPHRASE = "bench passphrase"  # throwaway wallet under bench/out
DEVICES = 200  # including the issuing device


def log(msg: str) -> None:
    """Progress, on stderr."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- generation
class _Dev:
    __slots__ = ("account", "account_key", "inbox", "key", "pk", "prev", "seq", "spendable")

    def __init__(self, key: SigningKey, account_key: SigningKey) -> None:
        self.key = key
        self.pk = bytes(key.verify_key)
        self.account_key = account_key
        self.account = bytes(account_key.verify_key)
        self.seq = -1
        self.prev = b""
        self.spendable = 0  # final credits claimed − sent (every block here turns final)
        self.inbox: list[tuple[bytes, int]] = []  # payments to it not yet claimed


class _Gen:
    """Signs a causally ordered stream of blocks, each followed by its witness vote."""

    def __init__(self, rng: random.Random, genesis: Genesis, witness: SigningKey) -> None:
        self.rng = rng
        self.net = genesis.network_id
        self.witness = witness
        self.witness_pk = bytes(witness.verify_key)
        self.bodies: list[bytes] = []
        self.blocks = 0

    def emit(self, dev: _Dev, block: Block, signer: SigningKey) -> bytes:
        body = block.body()
        raw = body + signer.sign(body).signature
        bid = entry_hash(raw)
        dev.seq, dev.prev = block.seq, bid
        vote = Vote(self.net, dev.pk, block.seq, bid, self.witness_pk).body()
        self.bodies += [raw, vote + self.witness.sign(vote).signature]
        self.blocks += 1
        return bid

    def open(self, dev: _Dev, label: str) -> None:
        b = Block(Kind.OPEN, self.net, dev.pk, 0, account=dev.account, label=label,
                  device_sig=device_signature(dev.key, self.net, dev.account, label))
        self.emit(dev, b, dev.account_key)

    def pay(self, src: _Dev, dst: _Dev, amount: int, kind: Kind = Kind.SEND) -> None:
        rng = self.rng
        request_id = rng.randbytes(16) if rng.random() < 0.10 else b""
        memo = b""
        if rng.random() < 0.05:
            box = SealedBox(VerifyKey(dst.pk).to_curve25519_public_key())
            memo = box.encrypt(rng.choice([b"lunch", b"rent share", b"thanks!", b"invoice 42"]))
        b = Block(kind, self.net, src.pk, src.seq + 1, src.prev, to_account=dst.account,
                  to_device=dst.pk, amount=amount, request_id=request_id, memo=memo)
        bid = self.emit(src, b, src.key)
        if kind == Kind.SEND:
            src.spendable -= amount
        dst.inbox.append((bid, amount))

    def receive(self, dev: _Dev) -> None:
        claim, amount = dev.inbox.pop(0)
        b = Block(Kind.RECEIVE, self.net, dev.pk, dev.seq + 1, dev.prev, claim=claim)
        self.emit(dev, b, dev.key)
        dev.spendable += amount


def bench_keys(seed: int) -> tuple[random.Random, tuple[SigningKey, SigningKey, SigningKey]]:
    """The generator's random source and the network's first keys: the issuer's, the
    witness's and the mint device's (bench/state.py signs with them to fund a device)."""
    rng = random.Random(seed)
    issuer, witness, mint = (SigningKey(rng.randbytes(32)) for _ in range(3))
    return rng, (issuer, witness, mint)


def generate(n_blocks: int, seed: int) -> tuple[bytes, bytes, list[bytes]]:
    """(genesis bytes, the bench account's seed, entry bodies) of an n-block network."""
    rng, (issuer, witness, mint_key) = bench_keys(seed)

    def key() -> SigningKey:
        return SigningKey(rng.randbytes(32))

    genesis = Genesis(
        "bench", "EUR", 2, bytes(issuer.verify_key), (bytes(witness.verify_key),), 1,
        Policy(5_000, 10_000, 100_000, 86_400),
    ).signed(issuer)
    g = _Gen(rng, genesis, witness)
    mint = _Dev(mint_key, issuer)
    g.open(mint, "mint")
    # Accounts: ours (the one the target wallet restores) with 3 devices, then accounts
    # of one to three devices until there are DEVICES devices in all.
    ours = key()
    accounts: list[list[_Dev]] = [[_Dev(key(), ours) for _ in range(3)]]
    total = 1 + 3
    while total < DEVICES:
        acc_key = key()
        k = min(rng.choice([1, 1, 1, 2, 2, 3]), DEVICES - total)
        accounts.append([_Dev(key(), acc_key) for _ in range(k)])
        total += k
    devs = [d for acc in accounts for d in acc]
    sibling = {d.pk: acc for acc in accounts for d in acc}
    for i, d in enumerate(devs):
        g.open(d, f"dev-{i}")
    log(f"generating {n_blocks} blocks (+ one vote each) over {len(devs) + 1} devices…")
    t0 = time.perf_counter()
    last_log = t0
    while g.blocks < n_blocks:
        r = rng.random()
        waiting = [d for d in rng.sample(devs, 8) if d.inbox]
        if waiting and r < 0.5:
            g.receive(waiting[0])
        elif r < 0.58 or not any(d.spendable > 0 for d in rng.sample(devs, 8)):
            g.pay(mint, rng.choice(devs), rng.randrange(1_000, 200_000), Kind.ISSUE)
        else:
            src = max(rng.sample(devs, 4), key=lambda d: d.spendable)
            if src.spendable <= 0:
                continue
            sibs = [s for s in sibling[src.pk] if s is not src]
            if sibs and rng.random() < 0.15:
                dst = rng.choice(sibs)  # a move between one's own devices
            else:
                dst = rng.choice(devs)
                if dst is src:
                    continue
            g.pay(src, dst, rng.randrange(1, src.spendable + 1) if rng.random() < 0.2
                  else max(1, rng.randrange(1, src.spendable + 1) // 10))
        now = time.perf_counter()
        if now - last_log > 5:
            log(f"  {g.blocks}/{n_blocks} blocks ({g.blocks / (now - t0):.0f}/s)")
            last_log = now
    log(f"generated {g.blocks} blocks, {len(g.bodies)} entries in {time.perf_counter() - t0:.1f} s")
    return genesis.raw, bytes(ours), g.bodies


def cached_bundle(n_blocks: int, seed: int, regen: bool) -> tuple[bytes, bytes, Path]:
    """(genesis, account seed, bundle path), generating the bundle on first use."""
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / f"bundle-{n_blocks}-s{seed}"
    bundle, meta = stem.with_suffix(".bundle"), stem.with_suffix(".json")
    if not regen and bundle.exists() and meta.exists():
        m = json.loads(meta.read_text())
        log(f"using cached {bundle.relative_to(HERE.parent)}")
        return bytes.fromhex(m["genesis"]), bytes.fromhex(m["account_seed"]), bundle
    genesis_raw, account_seed, bodies = generate(n_blocks, seed)
    network = entry_hash(genesis_raw)
    write_bundle(bundle, network, bodies)
    meta.write_text(json.dumps({"genesis": genesis_raw.hex(), "account_seed": account_seed.hex(),
                                "blocks": n_blocks, "entries": len(bodies)}))
    return genesis_raw, account_seed, bundle


# --------------------------------------------------------------------------- measuring
def raw_verify_rate(bodies: list[bytes]) -> float:
    """VerifyKey.verify calls per second on one core, over these entries."""
    keys: dict[bytes, VerifyKey] = {}
    work = []
    for raw in bodies:
        e = parse_entry(raw, verify=False)
        vk = keys.get(e.signer)
        if vk is None:
            vk = keys[e.signer] = VerifyKey(e.signer)
        work.append((vk, raw[:-SIG_BYTES], raw[-SIG_BYTES:]))
    t0 = time.perf_counter()
    for vk, body, sig in work:
        vk.verify(body, sig)
    return len(work) / (time.perf_counter() - t0)


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tally_balance(home: Path) -> tuple[float, dict]:
    """Wall time and JSON of ``tally balance --json`` in a fresh process."""
    exe = Path(sys.executable).with_name("tally")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tui.cli"]
    env = {k: v for k, v in os.environ.items() if k != "TALLY_HOME"}
    t0 = time.perf_counter()
    done = subprocess.run([*cmd, "balance", "--json", "--home", str(home)], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"tally balance failed: {done.stderr.strip()}")
    return wall, json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the last line on stdout carries the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=100_000, help="blocks in the bundle")
    p.add_argument("--seed", type=int, default=1, help="generator seed")
    p.add_argument("--regen", action="store_true", help="regenerate the cached bundle")
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of the merge here")
    a = p.parse_args(argv)

    genesis_raw, account_seed, bundle = cached_bundle(a.blocks, a.seed, a.regen)
    gc.collect()

    home = OUT / f"wallet-{a.blocks}"
    shutil.rmtree(home, ignore_errors=True)
    w = Wallet.join(home, genesis_raw)
    w.restore(keyfiles.phrase_from_seed(account_seed), PASSPHRASE, label="bench",
              limits=keyfiles.FAST_INSECURE)
    w.close()

    log("measuring raw signature verification (one core)…")
    bodies = read_bundle(bundle, entry_hash(genesis_raw))
    n_entries, signed_bytes = len(bodies), sum(len(b) for b in bodies)
    verify_before = raw_verify_rate(bodies)
    del bodies
    gc.collect()
    load = os.getloadavg()[0]

    log(f"merging {n_entries} entries into an empty wallet…")
    w = Wallet.open(home)
    _ = w.ledger  # derived once per process; holds only this wallet's own open
    profiler = None
    if a.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu0, t0 = time.process_time(), time.perf_counter()
    bodies = read_bundle(bundle, w.network)
    report = w.ingest_bodies(bodies)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(a.profile)
    cores = verify_threads(len(bodies))
    if report.new != n_entries:
        raise SystemExit(f"merged {report.new} new entries of {n_entries}")

    # Check that the merge meant something: every block final, money conserved.
    led = w.ledger
    statuses = [led.status.get(bid) for bid in led.blocks]
    final = sum(1 for s in statuses if s is not None and s.final)
    if final != a.blocks:
        raise SystemExit(f"only {final} of {a.blocks} blocks are final after the merge")
    total = sum(led.balance(k).spendable + led.balance(k).incoming for k in led.devices)
    claimed = {b.claim for b in led.blocks.values() if b.kind == Kind.RECEIVE}
    total += sum(b.amount for b in led.blocks.values() if b.is_payment() and b.id not in claimed)
    if total != 0:
        raise SystemExit(f"money not conserved: balances sum to {total}")
    held = sum(led.balance(k).total for k in led.devices)  # unclaimed money counted once
    if held != 0:
        raise SystemExit(f"money not conserved: balance totals (with moving, to claim) sum to "
                         f"{held}")
    want = {key_text(k): led.balance(k) for k in led.account_devices(w.account or b"")}
    w.store.checkpoint()
    w.close()
    del led, w, bodies
    gc.collect()
    disk = dir_bytes(home)

    reopen_s, doc = tally_balance(home)
    got = {d["device"]: (d["spendable_minor"], d["incoming_minor"], d["moving_minor"],
                         d["to_claim_minor"]) for d in doc["devices"]}
    if got != {k: (b.spendable, b.incoming, b.moving, b.to_claim) for k, b in want.items()}:
        raise SystemExit(f"tally balance disagrees with the ledger: {got} != {want}")
    more = sorted(tally_balance(home)[0] for _ in range(3))

    # The machine may be shared: measure the baseline again after the merge and keep the
    # faster of the two, so a slow moment cannot flatter the ratio.
    log("measuring raw signature verification again…")
    verify_per_s = max(verify_before, raw_verify_rate(read_bundle(bundle, entry_hash(genesis_raw))))

    t1 = time.perf_counter()
    rebuilt = Wallet.open(home)
    _ = rebuilt.ledger
    rebuild_s = time.perf_counter() - t1
    rebuilt.close()

    entries_per_s = n_entries / wall
    print(f"entries={n_entries} blocks={a.blocks} votes={n_entries - a.blocks} "
          f"signed_bytes={signed_bytes} disk_bytes={disk}")
    print(f"merge_s={wall:.2f} cpu_s={cpu:.2f} cpu_util={cpu / wall:.2f} "
          f"changes={len(report.changes)} load_before={load:.1f} "
          f"verify_per_s_before={verify_before:.0f}")
    print(f"account_spendable={doc['spendable']} devices_shown={len(doc['devices'])} "
          f"reopen_again_s={more[1]:.3f} ledger_rebuild_s={rebuild_s:.2f}")
    print(f"entries_per_s={entries_per_s:.0f} verify_per_s={verify_per_s:.0f} "
          f"ratio={entries_per_s / verify_per_s:.2f} cores={cores} reopen_s={reopen_s:.3f} "
          f"disk_ratio={disk / signed_bytes:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
