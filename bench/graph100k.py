#!/usr/bin/env python3
"""A synthetic closure of 100,000 store paths, as `nix path-info --json -r` prints it.

    graph100k.py [--paths 100000] [--seed S] [-o FILE]

Writes the JSON list form (Nix up to 2.18): one object per path with path,
narSize, narHash (SRI), deriver and references, so that closure-read needs
no store on disk.  The graph is a DAG built in topological order:

- fan-out: each path refers to 1 + a log-normal number of others (median
  5, mean 7, drawn up to 80), and to itself a third of the time, as Nix
  store items often do;
- popularity: the first path (glibc) is referred to by 80% of the paths,
  each of the next 19 (gcc-lib, zlib, ...) by 5%; of the other references,
  half go to paths picked in proportion to how often they are already
  referred to (preferential attachment), half to one of the 2,000 paths
  created just before (a package's own dependencies);
- one root: every path nobody refers to gets a referrer among the 500
  paths created after it, and a profile refers to what is left on top
  (about 200 paths);
- narSize log-normal (median 200 kB, up to 2 GB).

Same seed, same bytes.  The references in the JSON are sorted, as Nix
prints them.
"""
import argparse
import base64
import hashlib
import json
import math
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib"))
from layerpipe.storepath import make_store_path  # noqa: E402

STORE_DIR = "/nix/store"


def build(n: int, seed: str) -> list[dict]:
    rng = random.Random(f"{seed}:graph:{n}")
    refs: list[set[int]] = [set() for _ in range(n)]
    popular: list[int] = []          # node i appears 1 + (times referred to) times
    for i in range(n):
        if i:
            fan = min(i, 1 + int(rng.lognormvariate(math.log(4), 0.9)), 80)
            if rng.random() < 0.8:
                refs[i].add(0)                      # glibc
            refs[i].update(b for b in range(1, min(i, 20)) if rng.random() < 0.05)
            while len(refs[i]) < fan:
                if rng.random() < 0.5:
                    refs[i].add(rng.choice(popular))
                else:
                    refs[i].add(rng.randrange(max(0, i - 2000), i))
            popular.extend(refs[i])
        popular.append(i)
    referred = [False] * n
    for kids in refs:
        for k in kids:
            referred[k] = True
    tops = []
    for i in range(n - 1, -1, -1):
        if not referred[i]:
            if i < n - 200:
                refs[rng.randrange(i + 1, min(n, i + 500))].add(i)
            else:
                tops.append(i)
    names = [f"{_name(rng)}-{rng.randint(0, 20)}.{rng.randint(0, 99)}" for _ in range(n)]
    paths = [make_store_path(STORE_DIR, name, f"{seed}:{i}") for i, name in enumerate(names)]
    profile = make_store_path(STORE_DIR, "profile", seed)
    out = []
    for i in range(n):
        own = {paths[k] for k in refs[i]} | ({paths[i]} if rng.random() < 0.33 else set())
        out.append(_entry(paths[i], names[i], sorted(own), rng))
    out.append(_entry(profile, "profile", sorted(paths[i] for i in tops), rng))
    return sorted(out, key=lambda e: e["path"])


def _name(rng) -> str:
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 12)))


def _entry(path: str, name: str, refs: list[str], rng: random.Random) -> dict:
    size = int(min(2e9, max(500, rng.lognormvariate(math.log(200e3), 1.8))))
    nar_hash = base64.b64encode(hashlib.sha256(path.encode()).digest()).decode()
    return {"path": path, "narHash": f"sha256-{nar_hash}", "narSize": size, "references": refs,
            "deriver": make_store_path(STORE_DIR, f"{name}.drv", path), "valid": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", type=int, default=100_000, help="store paths besides the profile (default 100000)")
    ap.add_argument("--seed", default="graph100k")
    ap.add_argument("-o", "--output", default="-", help="file to write; '-' for stdout")
    args = ap.parse_args()
    text = json.dumps(build(args.paths, args.seed), separators=(",", ":"))
    if args.output == "-":
        sys.stdout.write(text)
    else:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
