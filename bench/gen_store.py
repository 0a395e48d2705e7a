#!/usr/bin/env python3
"""Realistic store closures, and the updates users make to them, for the bench.

    gen_store.py [--packages N] [--scale X] [--seed S] [--chain] ROOT [UPDATE...]

Writes a closure of N store items under ROOT/gnu/store, shaped like a
Debian-derived distribution, and its reference graph (Guix text format:
path, empty deriver line, count, references) as ROOT/graphs/A.refs; then,
for each UPDATE (app, lib, libc, sibling; default all four), the closure
after that update as ROOT/graphs/<update>.refs, each from A (or, with
--chain, each from the one before).  ROOT/closures.json tells what each
closure is and what changed.  Same seed, same bytes.

The shape.  glibc at the base (large) and a compiler runtime library,
referred to by nearly everything; a few data items with no references
(tzdata, certificates); zlib and other core libraries; a few big libraries
(20-60 MB: icu, perl, llvm, python, ...); a few medium ones (2-10 MB:
openssl, coreutils, bash, ...); many small ones (10 KB - 2 MB, log-normal);
references in DAG levels, each library referring to a few from lower levels
(at least one from the level just below, popular ones more often); root
applications on top, each with a few dependencies of its own; one profile
that refers to the applications and to bash and coreutils, the only root.

Input addressing.  A store path's hash part is derived from the item's
name, its own version counter and the store paths it refers to, so an item
gets a new path when it changes or when anything it refers to does,
transitively, up to the profile.  An item's bytes depend on its name and
version (so they stay put when only a dependency changes) plus the store
paths it embeds (its own and its references', as RUNPATH strings and
pkg-config files do), so a rebuilt item differs from the old one slightly.

File contents (contents.py) mix three kinds of data, in proportions drawn
per package: machine-code-like bytes (gzip -6: about 0.4), text (about
0.35) and incompressible bytes (compressed assets).  Sizes are real bytes.
"""
import argparse
import json
import math
import os
import random
import sys
from dataclasses import dataclass, field, replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib"))
from layerpipe.storepath import make_store_path  # noqa: E402

from contents import Corpora, write_item  # noqa: E402
from names import APPS, BIG, DATA, MEDIUM, SIBLING_APPS, SMALL, synth_name  # noqa: E402

STORE_DIR = "/gnu/store"
MB, KB = 1 << 20, 1 << 10
UPDATES = ("app", "lib", "libc", "sibling")


@dataclass
class Package:
    name: str
    kind: str                  # libc, runtime, core, data, big, medium, small, app, exclusive, profile
    level: int
    size: int                  # bytes on disk
    mix: tuple                 # (machine code, text, incompressible) fractions
    refs: list = field(default_factory=list)
    version: int = 0           # bumped when the item itself changes


@dataclass
class Distribution:
    seed: str
    packages: dict             # name -> Package
    depth: int
    scale: float = 1.0

    def closure(self) -> list[str]:
        """Names reachable from the profile (the one root)."""
        seen, todo = set(), ["profile"]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.packages[name].refs)
        return sorted(seen)

    def store_paths(self) -> dict[str, str]:
        """Input-addressed store paths of the closure's items."""
        paths: dict[str, str] = {}

        def visit(name):
            if name not in paths:
                pkg = self.packages[name]
                deps = sorted(visit(r) for r in pkg.refs)
                paths[name] = make_store_path(STORE_DIR, name, f"{self.seed}:v{pkg.version}:{','.join(deps)}")
            return paths[name]
        for name in self.closure():
            visit(name)
        return paths

    def referrers(self) -> dict[str, set]:
        """name -> every closure item that refers to it, directly or not."""
        names = self.closure()
        up: dict[str, set] = {n: set() for n in names}
        for n in names:
            for r in self.packages[n].refs:
                up[r].add(n)
        result = {}
        for n in names:
            found, todo = set(), list(up[n])
            while todo:
                m = todo.pop()
                if m not in found:
                    found.add(m)
                    todo.extend(up[m])
            result[n] = found
        return result

    def apps(self) -> list[str]:
        return sorted(r for r in self.packages["profile"].refs if self.packages[r].kind == "app")


# ---------------------------------------------------------------- planning

def _lognormal_size(rng: random.Random, median: int, sigma: float, low: int, high: int) -> int:
    return int(min(high, max(low, rng.lognormvariate(math.log(median), sigma))))


def _mix(rng: random.Random, kind: str) -> tuple:
    if kind == "data":
        rand = rng.uniform(0.0, 0.3)
        return (0.1, 0.9 - rand, rand)
    rand = min(0.6, rng.betavariate(1, 9))              # compressed assets: mean ~0.1
    text = rng.betavariate(2, 5) * (1 - rand)           # headers, docs, scripts
    return (1 - rand - text, text, rand)


class Planner:
    """Builds a Distribution level by level with one seeded generator."""

    def __init__(self, n: int, seed: str, scale: float):
        self.rng = random.Random(f"{seed}:plan")
        self.n, self.seed, self.scale = n, seed, scale
        self.depth = max(6, round(8 + 2.5 * math.log2(n / 140)))
        self.pkgs: dict[str, Package] = {}
        self.used_names: set[str] = set()
        self.referred: dict[str, int] = {}
        self.tools: list[str] = []

    def add(self, name, kind, level, size, refs=()) -> Package:
        pkg = Package(name, kind, level, max(4 * KB, int(size * self.scale)), _mix(self.rng, kind), sorted(set(refs)))
        self.pkgs[name] = pkg
        self.used_names.add(name.rsplit("-", 1)[0])
        for r in pkg.refs:
            self.referred[r] = self.referred.get(r, 0) + 1
        return pkg

    def fresh_name(self, pool: list[str]) -> str:
        for name in pool:
            if name not in self.pkgs and name.rsplit("-", 1)[0] not in self.used_names:
                return name
        while True:
            name = synth_name(self.rng)
            if name not in self.pkgs and name.rsplit("-", 1)[0] not in self.used_names:
                return name

    def at_levels(self, low: int, high: int, kinds=("core", "big", "medium", "small")) -> list[str]:
        return [p.name for p in self.pkgs.values() if low <= p.level <= high and p.kind in kinds]

    def pick(self, candidates: list[str], k: int) -> list[str]:
        """K distinct candidates, the often-referred-to ones more likely."""
        chosen: list[str] = []
        pool = list(candidates)
        while pool and len(chosen) < k:
            weights = [1 + self.referred.get(c, 0) for c in pool]
            choice = self.rng.choices(pool, weights)[0]
            chosen.append(choice)
            pool.remove(choice)
        return chosen

    def base_refs(self, level: int) -> list[str]:
        refs = ["glibc-2.39"] if self.rng.random() < 0.97 else []
        if level >= 2 and self.rng.random() < 0.45:
            refs.append("gcc-14.2.0-lib")
        if level >= 2 and self.rng.random() < 0.2:
            refs.append("zlib-1.3.1")
        return refs

    def lib_refs(self, level: int, extra: int) -> list[str]:
        """A library at LEVEL: the base refs, one from the level below, EXTRA more from below."""
        below = self.at_levels(level - 1, level - 1)
        lower = self.at_levels(1, level - 1)
        refs = self.base_refs(level) + self.pick(below, 1)
        return refs + self.pick([c for c in lower if c not in refs], extra)


def plan(n: int = 140, seed: str = "layerpipe-bench", scale: float = 1.0) -> Distribution:
    """A closure of N store items (N >= 40)."""
    if n < 40:
        raise ValueError("a realistic closure needs at least 40 items")
    p = Planner(n, seed, scale)
    _plan_base(p)
    apps = max(3, round(n / 28))
    own = [p.rng.randint(1, 4) for _ in range(apps)]
    big, medium = BIG[:max(3, round(n / 35))], MEDIUM[:max(4, round(n / 22))]
    small = n - len(p.pkgs) - len(big) - len(medium) - apps - sum(own) - 1
    _plan_libraries(p, big, medium, small)
    for count in own:
        add_app(p, p.fresh_name(APPS), count)
    _share_big(p)
    _attach_orphans(p)
    p.add("profile", "profile", p.depth + 2, 24 * KB, [a for a in p.pkgs if p.pkgs[a].kind == "app"] + p.tools)
    if len(p.pkgs) != n:
        raise AssertionError(f"planned {len(p.pkgs)} items, not {n}")
    return Distribution(seed, p.pkgs, p.depth, scale)


def _plan_base(p: Planner) -> None:
    p.add("glibc-2.39", "libc", 0, 28 * MB)
    for name, size in DATA[:max(3, p.n // 45)]:
        p.add(name, "data", 0, size * KB)
    p.add("gcc-14.2.0-lib", "runtime", 1, 5.5 * MB, ["glibc-2.39"])
    p.add("zlib-1.3.1", "core", 1, 190 * KB, ["glibc-2.39"])
    for name in SMALL[:2]:  # libffi, xz: low-level libraries many things use
        p.add(name, "core", 1, _lognormal_size(p.rng, 200 * KB, 0.6, 40 * KB, 1 * MB), ["glibc-2.39"])


def _plan_libraries(p: Planner, big: list, medium: list, small: int) -> None:
    """Shared libraries level by level: low levels hold more of them."""
    levels = list(range(2, p.depth + 1))
    placed = sorted(p.rng.choices(levels, [p.depth + 2 - lvl for lvl in levels], k=small))
    at = lambda frac: max(2, min(p.depth, round(frac * p.depth)))  # noqa: E731
    p.tools = [name for name, *_ in medium if name.startswith(("bash-", "coreutils-"))]
    for level in levels:
        for name, size, frac in big:
            if at(frac) == level:
                p.add(name, "big", level, size * MB, p.lib_refs(level, p.rng.randint(4, 9)))
        for name, low, high, frac in medium:
            if at(frac) == level:
                size = math.exp(p.rng.uniform(math.log(low), math.log(high))) * MB
                p.add(name, "medium", level, size, p.lib_refs(level, p.rng.randint(2, 6)))
        for _ in range(placed.count(level)):
            size = _lognormal_size(p.rng, 170 * KB, 1.1, 10 * KB, 2 * MB)
            extra = min(7, int(p.rng.expovariate(1 / 1.6)))
            p.add(p.fresh_name(SMALL), "small", level, size, p.lib_refs(level, extra))


def add_app(p: Planner, name: str, own_count: int) -> Package:
    """A root application with OWN_COUNT dependencies nothing else uses."""
    top = p.depth
    own: list[str] = []
    for _ in range(own_count):
        level = p.rng.randint(top // 2, top)
        size = _lognormal_size(p.rng, 150 * KB, 1.0, 10 * KB, 2 * MB)
        refs = p.base_refs(level) + p.pick(p.at_levels(2, level - 1), p.rng.randint(1, 3)) + own[-1:]
        own.append(p.add(p.fresh_name(SMALL), "exclusive", level, size, refs).name)
    shared = p.pick(p.at_levels(top // 2, top), p.rng.randint(3, 8))
    if p.rng.random() < 0.5:
        shared += p.pick(p.at_levels(2, top, kinds=("big",)), 1)
    size = math.exp(p.rng.uniform(math.log(0.8), math.log(12))) * MB
    runtime = ["gcc-14.2.0-lib"] if p.rng.random() < 0.5 else []
    return p.add(name, "app", top + 1, size, p.base_refs(top) + runtime + shared + own)


def _share_big(p: Planner) -> None:
    """Big libraries (python, llvm) are used by several items, not by one application alone."""
    for pkg in sorted(p.pkgs.values(), key=lambda x: (x.level, x.name)):
        if pkg.kind != "big":
            continue
        users = sorted(q.name for q in p.pkgs.values() if pkg.name in q.refs)
        above = sorted(q.name for q in p.pkgs.values() if q.level > pkg.level and q.name not in users
                       and q.kind in ("small", "medium", "big", "app"))
        for name in p.rng.sample(above, max(0, min(len(above), p.rng.randint(2, 5) - len(users)))):
            host = p.pkgs[name]
            host.refs = sorted(set(host.refs) | {pkg.name})
            p.referred[pkg.name] = p.referred.get(pkg.name, 0) + 1


def _attach_orphans(p: Planner) -> None:
    """Every library must be in the closure: give the unreferenced ones a referrer above them."""
    for pkg in sorted(p.pkgs.values(), key=lambda x: (x.level, x.name)):
        if pkg.kind in ("app", "profile") or p.referred.get(pkg.name) or pkg.name in p.tools:
            continue
        above = sorted(q.name for q in p.pkgs.values() if q.level > pkg.level and q.kind not in ("data", "exclusive"))
        host = p.pkgs[p.rng.choice(above)]
        host.refs = sorted(set(host.refs) | {pkg.name})
        p.referred[pkg.name] = 1


# ---------------------------------------------------------------- updates

def copy(dist: Distribution) -> Distribution:
    packages = {k: replace(v, refs=list(v.refs)) for k, v in dist.packages.items()}
    return Distribution(dist.seed, packages, dist.depth, dist.scale)


def update(dist: Distribution, kind: str, rng: random.Random) -> tuple[Distribution, dict]:
    """DIST after an update of KIND; returns it and a description."""
    new = copy(dist)
    if kind == "app":
        name = rng.choice(dist.apps())
        new.packages[name].version += 1
        return new, {"update": kind, "changed": name, "what": f"application {name} changes"}
    if kind == "libc":
        new.packages["glibc-2.39"].version += 1
        return new, {"update": kind, "changed": "glibc-2.39", "what": "glibc changes"}
    if kind == "lib":
        name = _middle_library(dist, rng)
        new.packages[name].version += 1
        return new, {"update": kind, "changed": name, "what": f"library {name} (level {dist.packages[name].level}"
                     f" of {dist.depth}) changes"}
    if kind == "sibling":
        return _sibling(new, rng)
    raise ValueError(f"unknown update {kind!r} (known: {', '.join(UPDATES)})")


def _middle_library(dist: Distribution, rng: random.Random) -> str:
    """A shared library in the middle levels whose dependents are 5-40% of the closure."""
    up = dist.referrers()
    total = len(up)
    mid = [n for n in sorted(up) if dist.packages[n].kind in ("small", "medium")
           and dist.depth / 3 <= dist.packages[n].level <= 2 * dist.depth / 3]
    fitting = [n for n in mid if 0.05 * total <= len(up[n]) <= 0.4 * total]
    return rng.choice(fitting or mid)


def _sibling(new: Distribution, rng: random.Random) -> tuple[Distribution, dict]:
    """One application swapped for another with a few dependencies of its own."""
    gone = rng.choice(new.apps())
    p = Planner(len(new.packages), new.seed, new.scale)
    p.rng, p.pkgs, p.depth = rng, new.packages, new.depth
    p.used_names = {k.rsplit("-", 1)[0] for k in new.packages}
    for pkg in new.packages.values():
        for r in pkg.refs:
            p.referred[r] = p.referred.get(r, 0) + 1
    app = add_app(p, p.fresh_name(SIBLING_APPS), rng.randint(1, 4))
    profile = new.packages["profile"]
    profile.refs = sorted((set(profile.refs) - {gone}) | {app.name})
    return new, {"update": "sibling", "changed": gone, "added": app.name,
                 "what": f"application {gone} swapped for {app.name}"}


def graph_text(dist: Distribution, paths: dict[str, str]) -> str:
    """The closure's reference graph in the Guix text format (an item embedding its own path refers to itself)."""
    out = []
    for name in sorted(paths, key=paths.get):
        pkg = dist.packages[name]
        refs = sorted({paths[r] for r in pkg.refs} | ({paths[name]} if pkg.kind not in ("data", "profile") else set()))
        out.append(f"{paths[name]}\n\n{len(refs)}\n" + "".join(r + "\n" for r in refs))
    return "".join(out)


def write_closure(root: str, dist: Distribution, label: str, corpora: Corpora) -> dict:
    """Write DIST's items under ROOT and its graph as ROOT/graphs/LABEL.refs; returns its summary."""
    paths = dist.store_paths()
    for name, path in paths.items():
        write_item(root, dist.packages[name], path, sorted(paths[r] for r in dist.packages[name].refs),
                   dist.seed, corpora)
    graph = os.path.join(root, "graphs", f"{label}.refs")
    os.makedirs(os.path.dirname(graph), exist_ok=True)
    with open(graph, "w") as f:
        f.write(graph_text(dist, paths))
    size = sum(dist.packages[n].size for n in paths)
    return {"graph": graph, "items": len(paths), "bytes": size, "paths": sorted(paths.values())}


# ---------------------------------------------------------------- driver

def generate(root: str, n: int = 140, scale: float = 1.0, seed: str = "layerpipe-bench",
             updates=UPDATES, chain: bool = False) -> dict:
    """The first closure (A) and one closure per update; returns {label: summary}."""
    base = plan(n, seed, scale)
    corpora = Corpora(seed)
    result = {"A": {**write_closure(root, base, "A", corpora), "what": "first build", "store_dir": STORE_DIR}}
    rng = random.Random(f"{seed}:updates")
    before, before_label = base, "A"
    for i, kind in enumerate(updates):
        after, info = update(before, kind, rng)
        label = f"{i + 1}-{kind}" if chain else kind
        summary = write_closure(root, after, label, corpora)
        old = set(result[before_label]["paths"])
        new = [p for p in summary["paths"] if p not in old]
        result[label] = {**summary, **info, "from": before_label, "new_items": len(new)}
        if chain:
            before, before_label = after, label
    with open(os.path.join(root, "closures.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="directory to write the store (ROOT/gnu/store) and graphs (ROOT/graphs) under")
    ap.add_argument("updates", nargs="*", default=list(UPDATES), help=f"updates to apply: {', '.join(UPDATES)}")
    ap.add_argument("--packages", "-n", type=int, default=140, help="items in the closure (default 140; try 300, 1000)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every item's size (default 1: ~250 MB at 140)")
    ap.add_argument("--seed", default="layerpipe-bench", help="same seed, same store")
    ap.add_argument("--chain", action="store_true", help="apply the updates one after the other, not each to A")
    args = ap.parse_args(argv)
    bad = [u for u in args.updates if u not in UPDATES]
    if bad:
        ap.error(f"unknown update {bad[0]!r} (known: {', '.join(UPDATES)})")
    result = generate(args.root, args.packages, args.scale, args.seed, args.updates, args.chain)
    for label, info in result.items():
        extra = f", {info['new_items']} new items: {info['what']}" if label != "A" else ""
        print(f"{label}: {info['graph']}: {info['items']} items, {info['bytes'] / MB:.1f} MiB{extra}")


if __name__ == "__main__":
    main()
