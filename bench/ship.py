#!/usr/bin/env python3
"""Bytes shipped per update, for every layering strategy, through the real pipeline.

    bench/ship.py [--quick] [--packages N] [--scale X] [--max-layers 20,100] ...

Generates a store (gen_store.py): a first closure A and one closure per update
kind (app, lib, libc, sibling), each from A.  For each strategy and
--max-layers it builds image A, then image B for each update, with

    closure-read --root R G.refs > G.ndjson            (once per closure)
    layer-split -s S --max-layers M [--previous A] G.ndjson
      | layer-tar --blob-dir D | image-assemble -o image.tar

(`stable` builds B with --previous pointing at its own image A, the way users
run it; the other strategies take no previous build).  Then, from the image
records image-assemble prints:

    shipped(A->B) = sum of the compressed sizes of B's layers whose digest is
                    not among A's layers
    ideal(A->B)   = sum of the compressed sizes of B's new store items, each
                    tarred and gzipped on its own by layer-tar (split_new.py)

and writes the table to bench/results/ship.md, everything (with the layers
each B re-ships and what they hold) to ship.json, and a chart to ship.png.

Each run gets a fresh blob directory, so layer-tar's cache never answers and
every digest comes from the store.  A run whose layer-split output is byte for
byte that of an earlier run (single and two-layer at 20 and 100 layers) reuses
that run's image record instead of tarring the same layers again: layer-tar
and image-assemble are deterministic.
"""
import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.realpath(__file__))
CHECKOUT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen_store  # noqa: E402
import report  # noqa: E402

STRATEGIES = ("single", "two-layer", "size", "popularity", "auto", "stable")
MB = 1e6


class Bench:
    # A subclass that needs every image file (push.py pushes them) sets keep_images and
    # measures each pair in compare(); with shared_blobs (a directory) every run tars into
    # that one blob dir, so layer-tar's cache answers for layers built before.
    keep_images = False
    shared_blobs: str | None = None

    def __init__(self, args, work: str):
        self.args, self.work = args, work
        self.root = os.path.join(work, "store")
        self.bin, self.code_id = snapshot(work, args.rev, args.code)
        self.memo: dict[str, dict] = {}
        self.memo_lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.runs = 0

    def say(self, message: str) -> None:
        if not self.args.quiet:
            with self.log_lock:
                print(f"[{time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)

    def sh(self, command: str) -> None:
        done = subprocess.run(["bash", "-c", "set -eo pipefail; " + command], stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise RuntimeError(f"pipeline failed ({done.returncode}): {command}\n{done.stderr}")
        if done.stderr.strip():
            self.say(done.stderr.strip())

    def paths(self, graph: str) -> str:
        """GRAPH's path records, from closure-read run once per closure (its output is deterministic)."""
        out = graph[:-len(".refs")] + ".ndjson"
        with self.memo_lock:
            event = self.memo.setdefault(out, {"ready": threading.Event()})
            first = not event.get("claimed")
            event["claimed"] = True
        if first:
            try:
                self.sh(f"{self.bin}/closure-read --root {shlex.quote(self.root)} {shlex.quote(graph)}"
                        f" > {shlex.quote(out)}")
                event["result"] = out
            finally:
                event["ready"].set()
        event["ready"].wait()
        if "result" not in event:
            raise RuntimeError(f"closure-read {graph} failed")
        return out

    def build(self, name: str, graph: str, strategy: str, max_layers: int, previous: str | None = None,
              keep: bool = False) -> dict:
        """One image through the real pipeline; returns its layers (from the records) and where it is."""
        d = os.path.join(self.work, "runs", name)
        os.makedirs(d)
        q = shlex.quote
        prev = f" --previous {q(previous)}" if previous else ""
        split = os.path.join(d, "split.ndjson")
        self.sh(f"{self.bin}/layer-split --strategy {strategy} --max-layers {max_layers}{prev}"
                f" {q(self.paths(graph))} > {q(split)}")
        with open(split, "rb") as f:
            key = hashlib.sha256(f.read()).hexdigest()
        with self.memo_lock:
            twin = None if keep else self.memo.get(key)
            if twin is None:
                event = self.memo[key] = {"ready": threading.Event()}
        if twin is not None:
            twin["ready"].wait()
            if "result" not in twin:
                raise RuntimeError(f"{name}: the run it repeats failed")
            return {**twin["result"], "dir": d, "reused_from": twin["result"]["dir"]}
        try:
            blobs = self.shared_blobs or os.path.join(d, "blobs")
            self.sh(f"{self.bin}/layer-tar -q --root {q(self.root)} --blob-dir {q(blobs)} {q(split)}"
                    f" | tee {q(d)}/tarred.ndjson | {self.bin}/image-assemble -o {q(d)}/image.tar > {q(d)}/image.json")
            self.runs += 1
            result = {"dir": d, **read_run(d)}
            if not self.shared_blobs:
                shutil.rmtree(blobs)
            if not keep:
                os.unlink(os.path.join(d, "image.tar"))
            event["result"] = result
        finally:
            event["ready"].set()
        return result

    def ideal(self, label: str, closures: dict) -> dict:
        """Compressed size of each store item of LABEL that A lacks, tarred on its own."""
        d = os.path.join(self.work, "runs", f"ideal-{label}")
        os.makedirs(d)
        old = os.path.join(d, "A.paths")
        with open(old, "w") as f:
            f.write("\n".join(closures["A"]["paths"]) + "\n")
        q = shlex.quote
        self.sh(f"{sys.executable} {HERE}/split_new.py {q(old)} < {q(self.paths(closures[label]['graph']))}"
                f" | {self.bin}/layer-tar -q --root {q(self.root)} --blob-dir {q(d)}/blobs > {q(d)}/tarred.ndjson")
        items = {r["paths"][0]: r["size"] for r in records(os.path.join(d, "tarred.ndjson")) if r["type"] == "layer"}
        shutil.rmtree(os.path.join(d, "blobs"))
        self.say(f"ideal {label}: {len(items)} new items, {sum(items.values()) / MB:.2f} MB")
        return {"bytes": sum(items.values()), "items": items}

    def series(self, strategy: str, max_layers: int, closures: dict, updates: list[str]) -> dict:
        """Image A, then image B for each update; returns the measures per update."""
        tag = f"{strategy}-{max_layers}"
        stable = strategy == "stable"
        keep_a = stable or self.keep_images
        a = self.build(f"{tag}-A", closures["A"]["graph"], strategy, max_layers, keep=keep_a)
        previous = self.previous_of(a) if stable else None
        out = {"A": {"layers": len(a["image_layers"]), "bytes": sum(s for _, s in a["image_layers"])}}
        for label in updates:
            b = self.build(f"{tag}-{label}", closures[label]["graph"], strategy, max_layers, previous,
                           keep=self.keep_images)
            out[label] = self.compare(a, b, f"{tag} {label}")
            self.say(f"{tag:>15} {label:>8}: shipped {out[label]['shipped'] / MB:8.2f} MB in "
                     f"{out[label]['shipped_layers']} of {out[label]['layers']} layers")
        if keep_a and not self.args.keep:
            os.unlink(os.path.join(a["dir"], "image.tar"))
        return out

    def compare(self, a: dict, b: dict, name: str) -> dict:
        return measure(a, b)

    def previous_of(self, a: dict) -> str:
        if self.args.previous_form == "records":
            return os.path.join(a["dir"], "tarred.ndjson")
        return os.path.join(a["dir"], "image.tar")


def snapshot(work: str, rev: str | None, source: str = CHECKOUT) -> tuple[str, str]:
    """Copy bin/ and lib/ (from SOURCE's files, or from git revision REV) into
    WORK, so that one run uses one version of the code however the checkout
    changes meanwhile; returns the copy's bin/ and a digest of its files."""
    code = os.path.join(work, "code")
    os.makedirs(code)
    if rev:
        archive = subprocess.run(["git", "-C", CHECKOUT, "archive", rev, "bin", "lib"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", code], input=archive.stdout, check=True)
    else:
        for part in ("bin", "lib"):
            shutil.copytree(os.path.join(source, part), os.path.join(code, part),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(code)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, code).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    return os.path.join(code, "bin"), digest.hexdigest()[:12]


def records(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_run(d: str) -> dict:
    """The image's layers (digest, size) and the store layers' records of a finished run."""
    image = next(r for r in records(os.path.join(d, "image.json")) if r["type"] == "image")
    recs = records(os.path.join(d, "tarred.ndjson"))
    nar = {r["path"]: r.get("narSize", 0) for r in recs if r["type"] == "path"}
    layers = [{"digest": r["digest"], "size": r["size"], "paths": r["paths"], "reason": r.get("reason", "")}
              for r in recs if r["type"] == "layer"]
    return {"image_layers": [(x["digest"], x["size"]) for x in image["layers"]],
            "chain_ids": chain_ids([x["diff_id"] for x in image["layers"]]), "store_layers": layers, "nar": nar}


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The ChainID of each layer (OCI image spec): what Docker's layer store is keyed by."""
    chain: list[str] = []
    for diff_id in diff_ids:
        chain.append(diff_id if not chain else
                     "sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def measure(a: dict, b: dict) -> dict:
    """shipped(A->B), B's layer count, and what each re-shipped store layer holds."""
    old = {digest for digest, _ in a["image_layers"]}
    shipped = [(digest, size) for digest, size in b["image_layers"] if digest not in old]
    a_paths = {p for layer in a["store_layers"] for p in layer["paths"]}
    detail = []
    for layer in b["store_layers"]:
        if layer["digest"] in old:
            continue
        kept = [p for p in layer["paths"] if p in a_paths]
        detail.append({"size": layer["size"], "items": len(layer["paths"]), "new_items": len(layer["paths"]) - len(kept),
                       "old_nar": sum(b["nar"].get(p, 0) for p in kept), "reason": layer["reason"],
                       "old_examples": sorted(kept, key=lambda p: -b["nar"].get(p, 0))[:4]})
    old_chains = set(a["chain_ids"])
    by_chain = sum(size for (_, size), chain in zip(b["image_layers"], b["chain_ids"]) if chain not in old_chains)
    return {"shipped": sum(s for _, s in shipped), "shipped_by_chain": by_chain,
            "shipped_layers": len(shipped), "layers": len(b["image_layers"]),
            "image_bytes": sum(s for _, s in b["image_layers"]), "reshipped": detail,
            "reused_from": b.get("reused_from")}


def parse_args(argv=None, name: str = "ship", description: str = __doc__):
    ap = argparse.ArgumentParser(description=description.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller store: about a minute instead of five")
    ap.add_argument("--packages", "-n", type=int, default=140, help="store items in the closure (default 140)")
    ap.add_argument("--scale", type=float, help="item size factor (default 0.6: ~160 MB at 140 items; --quick 0.1)")
    ap.add_argument("--seed", default="layerpipe-bench")
    ap.add_argument("--max-layers", default="20,100", help="comma-separated budgets (default 20,100)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all)")
    ap.add_argument("--updates", default=",".join(gen_store.UPDATES), help="comma-separated (default: all)")
    ap.add_argument("--previous-form", choices=("image", "records"), default="image",
                    help="what stable's B gets as --previous: A's image.tar (default) or A's layer-tar records")
    ap.add_argument("--rev", help="run the layerpipe of this git revision (default: the work tree as it is at the start)")
    ap.add_argument("--code", default=CHECKOUT, help="run the bin/ and lib/ of this directory (default: this checkout)")
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 2, help="pipelines run at once")
    ap.add_argument("--workdir", help="where the store and runs go (default: a temp dir, in /dev/shm if there)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir and stable's images")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="results directory (default bench/results)")
    ap.add_argument("--name", default=name, help=f"base name of the result files (default {name})")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    args.scale = args.scale if args.scale is not None else (0.1 if args.quick else 0.6)
    args.max_layers = [int(x) for x in args.max_layers.split(",")]
    args.strategies = args.strategies.split(",")
    args.updates = args.updates.split(",")
    for s in args.strategies:
        if s not in STRATEGIES:
            ap.error(f"unknown strategy {s!r}")
    return args


def workdir(args) -> str:
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        return tempfile.mkdtemp(prefix="layerpipe-bench-", dir=args.workdir)
    shm = "/dev/shm"
    roomy = os.path.isdir(shm) and shutil.disk_usage(shm).free > 4e9 * max(1.0, args.scale * args.packages / 140)
    return tempfile.mkdtemp(prefix="layerpipe-bench-", dir=shm if roomy else None)


def run(args, bench_class: type = Bench) -> dict:
    work = workdir(args)
    bench = bench_class(args, work)
    try:
        bench.say(f"generating {args.packages} items at scale {args.scale} in {work}")
        closures = gen_store.generate(bench.root, args.packages, args.scale, args.seed, args.updates)
        for label, info in closures.items():
            bench.say(f"closure {label}: {info['items']} items, {info['bytes'] / MB:.1f} MB"
                      + (f", {info['new_items']} new: {info['what']}" if label != "A" else ""))
        combos = [(s, m) for s in args.strategies for m in args.max_layers]
        # The stable series (two builds in a row on one image) and the many-layer ones go first.
        combos.sort(key=lambda c: (c[0] != "stable", -c[1]))
        pool = ThreadPoolExecutor(max(1, args.jobs))
        try:
            ideal = {u: pool.submit(bench.ideal, u, closures) for u in args.updates}
            series = {c: pool.submit(bench.series, c[0], c[1], closures, args.updates) for c in combos}
            ideal = {u: f.result() for u, f in ideal.items()}
            results = {f"{s}@{m}": series[(s, m)].result() for m in args.max_layers for s in args.strategies}
        finally:  # on an error or ^C, start nothing more; the pipelines running end with their input
            pool.shutdown(wait=True, cancel_futures=True)
        return {"config": config(args, closures, bench), "ideal": ideal, "results": results}
    finally:
        if args.keep:
            bench.say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def config(args, closures: dict, bench: Bench) -> dict:
    describe = ["describe", "--always", args.rev] if args.rev else ["describe", "--always", "--dirty"]
    git = subprocess.run(["git", "-C", CHECKOUT, *describe], capture_output=True, text=True)
    version = git.stdout.strip() if os.path.realpath(args.code) == os.path.realpath(CHECKOUT) or args.rev \
        else f"the files in {args.code}"
    return {"packages": args.packages, "scale": args.scale, "seed": args.seed, "max_layers": args.max_layers,
            "strategies": args.strategies, "updates": args.updates, "previous_form": args.previous_form,
            "compression": "gzip -6 (layer-tar default)", "layerpipe": version,
            "code_sha256": bench.code_id, "python": sys.version.split()[0], "tar_runs": bench.runs,
            "closures": {k: {x: v[x] for x in ("items", "bytes", "what", "new_items", "changed", "added") if x in v}
                         for k, v in closures.items()}}


START = time.monotonic()


def main(argv=None) -> None:
    args = parse_args(argv)
    data = run(args)
    data["config"]["seconds"] = round(time.monotonic() - START, 1)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    data["config"]["cpu_seconds"] = round(used.ru_utime + used.ru_stime, 1)
    data["config"]["load_average"] = [round(x, 1) for x in os.getloadavg()]
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, args.name)
    table = report.markdown(data)
    with open(base + ".md", "w") as f:
        f.write(table)
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    chart = report.chart(data, base + ".png")
    print(table)
    print(f"wrote {base}.md, {base}.json and {base}.png ({chart})")
    cfg = data["config"]
    print(f"run time: {cfg['seconds']:.1f} s, {cfg['cpu_seconds']:.0f} CPU-seconds in the pipelines "
          f"({cfg['tar_runs']} layer-tar runs; load average at the end {cfg['load_average'][1]} over 5 minutes)")


if __name__ == "__main__":
    main()
