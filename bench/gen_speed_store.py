#!/usr/bin/env python3
"""A store of a chosen size, for the speed bench (bench/speed.py).

    gen_speed_store.py [--size 300M] [--seed S] ROOT

Writes about 200 store items under ROOT/gnu/store and two reference graphs
(Guix text format: path, empty deriver line, count, references):

- ROOT/graphs/A.refs: a profile (the one root) referring to four
  applications: one that holds about 10% of the store's bytes and three
  small ones; below them about 195 libraries in a DAG, glibc at the bottom.
- ROOT/graphs/B.refs: the same after an application-only change: the big
  application replaced by a new version (new store path, new bytes, same
  shape), and the profile that refers to it (new path).

ROOT/store.json describes both closures (items, files, bytes) and lists A's
items.  Same size and seed, same bytes.

The spread of files, as fractions of the bytes of A:
- the application, 10%: one binary (half of it), a few mid-size files,
  many small ones;
- large binaries, 35%: 20-200 MB each (capped at an eighth of the store
  for small sizes), in a few libraries;
- mid-size files, 32%: 100 KB - 2 MB, log-uniform (shared libraries, data);
- small files, 21%: 100 B - 20 KB, log-uniform (headers, scripts, docs,
  locale files); some libraries keep them in deep trees (up to 12 levels);
- symlinks: libfoo.so -> libfoo.so.1 -> libfoo.so.1.2 (relative), links
  to referenced items (absolute store paths), and the profile's symlink
  forest.

Contents come in three kinds, drawn per file (large files per 1 MiB
block): text (a synthetic vocabulary with Zipf weights: gzip -6 about
0.39), machine-code-like bytes (Zipf-weighted short tokens: about 0.56)
and incompressible random bytes (about a fifth of all bytes); the whole
store compresses to about 0.65 with gzip -6 or zstd -3.  Text and code
blocks are slices of two 8 MiB pools; blocks of mid-size and large files
are passed through a random byte permutation, so that no two blocks
repeat each other (which would flatter compressors with large windows).
All randomness comes from random.Random seeded by (seed, item, version):
no numpy; a 1 GB store takes about 10 s to write here.
"""
import argparse
import itertools
import json
import math
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib"))
from layerpipe.storepath import make_store_path  # noqa: E402

GEN_VERSION = 1          # bump when the same size and seed could give other bytes
STORE_DIR = "/gnu/store"
KB, MB = 1 << 10, 1 << 20
POOL = 8 * MB
BLOCK = MB
APP_SHARE, LARGE_SHARE, MID_SHARE, SMALL_SHARE = 0.10, 0.35, 0.32, 0.21
N_LIBS = 195


def parse_size(text: str) -> int:
    """'300M', '1G', '4G', '1.5G', '123456' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", text, re.I)
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 300M, 1G, 4G)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


# ------------------------------------------------------------------ contents

class Pools:
    """Two 8 MiB pools, text and machine-code-like, from one seed."""

    def __init__(self, seed: str):
        rng = random.Random(f"{seed}:pools")
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        lw = [1 / (i + 1) ** 0.7 for i in range(26)]
        vocab = ["".join(rng.choices(letters, lw, k=rng.randint(2, 10))) for _ in range(6000)]
        seps = [" "] * 12 + ["\n", ", ", ". ", "(", ") ", "_", "/", "=", "\t", "; "]
        words = rng.choices(vocab, [1 / (i + 1) for i in range(len(vocab))], k=POOL // 6 + 1000)
        text = "".join(itertools.chain.from_iterable(zip(words, rng.choices(seps, k=len(words)))))
        self.text = text.encode()[:POOL]
        opcodes = [bytes([b]) for b in rng.sample(range(256), 40)]
        tokens = []
        for _ in range(4096):
            n = rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 7))
            tokens.append(rng.choice(opcodes) + rng.randbytes(n - 1))
        code = b"".join(rng.choices(tokens, [1 / (i + 1) ** 0.9 for i in range(4096)], k=POOL // 3))
        self.code = code[:POOL]

    def slice(self, pool: bytes, rng: random.Random, n: int) -> bytes:
        at = rng.randrange(POOL - n) if n < POOL else 0
        return pool[at:at + n]


def blocks(pools: Pools, rng: random.Random, kind: str, size: int):
    """SIZE bytes of KIND ('text', 'code', 'random', 'mixed'), in blocks of at most 1 MiB."""
    for at in range(0, size, BLOCK):
        n = min(BLOCK, size - at)
        k = kind if kind != "mixed" else rng.choices(("code", "random", "text"), (0.5, 0.3, 0.2))[0]
        if k == "random":
            yield rng.randbytes(n)
            continue
        data = pools.slice(pools.text if k == "text" else pools.code, rng, n)
        if size > 64 * KB:
            perm = list(range(256))
            rng.shuffle(perm)
            data = data.translate(bytes(perm))
        yield data


# ------------------------------------------------------------------ plan

@dataclass
class Item:
    name: str
    kind: str                                       # lib, app, tool, profile
    refs: list = field(default_factory=list)        # names
    files: list = field(default_factory=list)       # (relpath, size, content kind, exec)
    links: list = field(default_factory=list)       # (relpath, target); target may name "{ref:NAME}"
    version: int = 0


def _log_uniform(rng, low, high):
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def _fill(rng, budget, low, high):
    """Sizes drawn log-uniform in [LOW, HIGH] until they add up to BUDGET."""
    sizes, total, budget = [], 0, int(budget)
    while total < budget:
        s = min(_log_uniform(rng, low, high), budget - total)
        sizes.append(max(1, s))
        total += sizes[-1]
    return sizes


def _small_dirs(rng, item: Item, count: int, deep: bool) -> list[str]:
    stem = item.name.rsplit("-", 1)[0]
    dirs = [f"share/{stem}", f"share/doc/{stem}", f"include/{stem}", f"lib/{stem}", f"share/locale/{stem}"]
    if deep:
        path = f"share/{stem}/modules"
        for depth in range(rng.randint(6, 12)):
            path += f"/{rng.choice(['core', 'ext', 'impl', 'detail', 'v2', 'gen', 'data', 'x86'])}{depth}"
            dirs.append(path)
    # at most ~150 files a folder, as real packages spread them
    extra = max(0, count // 150 - len(dirs))
    dirs += [f"{rng.choice(dirs[:5])}/part{i:03d}" for i in range(extra)]
    return dirs


def _add_small(rng, item: Item, sizes: list[int], deep: bool) -> None:
    dirs = _small_dirs(rng, item, len(sizes), deep)
    for i, s in enumerate(sizes):
        d = rng.choice(dirs)
        kind = "text" if rng.random() < 0.7 else "code"
        ext = ".h" if d.startswith("include") else ".scm" if kind == "text" else ".mo"
        item.files.append((f"{d}/f{i:05d}{ext}", s, kind, False))
    if deep:
        d = dirs[-1]
        item.links.append((f"{d}/up", "../../.."))
        item.links.append((f"{d}/top-readme", "../" * d.count("/") + f"share/doc/{item.name.rsplit('-', 1)[0]}"))


def _add_library(item: Item, size: int, kind: str) -> None:
    """lib/libfoo<k>.so.1.2, and the usual relative links to it."""
    lib = f"lib{item.name.rsplit('-', 1)[0]}{len(item.files)}.so"
    item.files.append((f"lib/{lib}.1.2", size, kind, True))
    item.links.append((f"lib/{lib}.1", f"{lib}.1.2"))
    item.links.append((f"lib/{lib}", f"{lib}.1"))


def plan(size: int, seed: str) -> dict[str, Item]:
    """Closure A: libraries in a DAG, their files, four applications and the profile."""
    rng = random.Random(f"{seed}:plan:{size}")
    libs = ["glibc-2.39", "gcc-14.2.0-lib"] + [f"lib{_word(rng)}-{rng.randint(0, 9)}.{rng.randint(0, 30)}"
                                               for _ in range(N_LIBS - 2)]
    libs = list(dict.fromkeys(libs))
    items = _library_graph(rng, libs)
    _library_files(rng, items, libs, size)
    top = libs[len(libs) // 2:]
    apps = [("hello-app-2.1", APP_SHARE), ("bash-5.2.15", 0.004), ("coreutils-9.1", 0.004), ("curl-8.6.0", 0.004)]
    for name, share in apps:
        items[name] = _app(rng, name, int(share * size), sorted(rng.sample(top, 6) + [libs[0]]))
    items["profile"] = _profile([a for a, _ in apps])
    _connect(rng, items, libs, apps[0][0])
    return items


def _library_graph(rng, libs: list[str]) -> dict[str, Item]:
    """Each library refers to glibc, to 1-3 of the 40 before it, sometimes to one far below."""
    items: dict[str, Item] = {}
    for i, name in enumerate(libs):
        refs = set()
        if i > 0 and (i == 1 or rng.random() < 0.95):
            refs.add(libs[0])
        if i > 2:
            low = max(2, i - 40)
            refs.update(rng.sample(libs[low:i], min(i - low, rng.randint(1, 3))))
            if rng.random() < 0.3:
                refs.add(libs[rng.randrange(1, i)])
        items[name] = Item(name, "lib", sorted(refs))
    return items


def _library_files(rng, items: dict[str, Item], libs: list[str], size: int) -> None:
    """Large, mid-size and small files spread over the libraries (lognormal weights), and links."""
    weights = list(itertools.accumulate(rng.lognormvariate(0, 1.2) for _ in libs))
    large = _fill(rng, LARGE_SHARE * size, 20 * MB, max(20 * MB, min(200 * MB, size // 8))) \
        if size * LARGE_SHARE >= 20 * MB else []
    for s, name in zip(large, rng.sample(libs[2:], len(large))):
        _add_library(items[name], s, "mixed")
    for s in _fill(rng, MID_SHARE * size, 100 * KB, 2 * MB):
        item = items[rng.choices(libs, cum_weights=weights)[0]]
        if rng.random() < 0.6:
            _add_library(item, s, rng.choices(("code", "random", "text"), (0.55, 0.25, 0.2))[0])
        else:
            item.files.append((f"share/{_stem(item.name)}/data{len(item.files)}.dat", s,
                               rng.choices(("code", "random", "text"), (0.4, 0.35, 0.25))[0], False))
    per_lib: dict[str, list[int]] = {}
    for s in _fill(rng, SMALL_SHARE * size, 100, 20 * KB):
        per_lib.setdefault(rng.choices(libs, cum_weights=weights)[0], []).append(s)
    deep = set(rng.sample(libs, len(libs) // 10))
    for name, sizes in per_lib.items():
        _add_small(rng, items[name], sizes, name in deep)
    for name in libs:
        item = items[name]
        if item.refs and rng.random() < 0.2:
            ref = rng.choice(item.refs)
            item.links.append((f"share/{_stem(name)}/dep-{_stem(ref)}", f"{{ref:{ref}}}/lib"))
        if not item.files:
            item.files.append((f"share/doc/{_stem(name)}/README", 300 + rng.randrange(3000), "text", False))


def _stem(name: str) -> str:
    return name.rsplit("-", 1)[0]


def _connect(rng, items: dict[str, Item], libs: list[str], app: str) -> None:
    """Give every library a referrer, so that the profile is the one root."""
    referred = {r for item in items.values() for r in item.refs}
    for i in range(len(libs) - 1, -1, -1):
        if libs[i] not in referred:
            above = libs[i + 1:i + 40]
            referrer = items[rng.choice(above)] if above else items[app]
            referrer.refs = sorted({*referrer.refs, libs[i]})
            referred.add(libs[i])


def _word(rng) -> str:
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9)))


def _app(rng, name: str, size: int, refs: list[str]) -> Item:
    stem = name.rsplit("-", 1)[0]
    item = Item(name, "app" if size > 1 * MB else "tool", refs)
    item.files.append((f"bin/{stem}", size // 2, "mixed", True))
    mid = _fill(rng, size * 0.3, 100 * KB, 2 * MB) if size > 4 * MB else []
    for i, s in enumerate(mid):
        item.files.append((f"lib/{stem}/module{i:03d}.so", s, rng.choice(("code", "code", "random")), True))
    sizes = _fill(rng, size - size // 2 - sum(mid), 100, 20 * KB)
    _add_small(rng, item, sizes, deep=True)
    item.links.append((f"bin/{stem[:2]}", stem))
    item.links.append((f"share/{stem}/libc", f"{{ref:{refs[-1]}}}/lib"))
    return item


def _profile(apps: list[str]) -> Item:
    item = Item("profile", "profile", sorted(apps))
    for app in apps:
        stem = app.rsplit("-", 1)[0]
        item.links.append((f"bin/{stem}", f"{{ref:{app}}}/bin/{stem}"))
        item.links.append((f"share/{stem}", f"{{ref:{app}}}/share/{stem}"))
    item.files.append(("manifest", 2000, "text", False))
    item.files.append(("etc/profile", 600, "text", False))
    return item


def application_change(items: dict[str, Item]) -> dict[str, Item]:
    """B: the big application's next version (new bytes, same shape) and its profile."""
    old = items["hello-app-2.1"]
    new = Item("hello-app-2.2", old.kind, old.refs, old.files, old.links, old.version + 1)
    changed = {k: v for k, v in items.items() if k != old.name}
    changed[new.name] = new
    changed["profile"] = _profile(["hello-app-2.2"] + [r for r in items["profile"].refs if r != old.name])
    return changed


def store_paths(items: dict[str, Item], seed: str) -> dict[str, str]:
    """Input-addressed: an item's path follows from its name, version and references' paths."""
    paths: dict[str, str] = {}

    def visit(name: str) -> str:
        if name not in paths:
            item = items[name]
            deps = ",".join(sorted(visit(r) for r in item.refs))
            paths[name] = make_store_path(STORE_DIR, name, f"{seed}:v{item.version}:{deps}")
        return paths[name]
    for name in items:
        visit(name)
    return paths


# ------------------------------------------------------------------ writing

def write_item(root: str, item: Item, path: str, paths: dict[str, str], pools: Pools, seed: str) -> None:
    top = os.path.join(root, path.lstrip("/"))
    rng = random.Random(f"{seed}:{item.name}:v{item.version}")
    tmp = top + ".tmp"
    for rel, size, kind, executable in item.files:
        fs = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(fs), exist_ok=True)
        with open(fs, "wb") as f:
            for data in blocks(pools, rng, kind, size):
                f.write(data)
        os.chmod(fs, 0o555 if executable else 0o444)
    for rel, target in item.links:
        fs = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(fs), exist_ok=True)
        os.symlink(re.sub(r"\{ref:([^}]+)\}", lambda m: paths[m.group(1)], target), fs)
    os.rename(tmp, top)


def write_graph(file: str, items: dict[str, Item], paths: dict[str, str]) -> None:
    """Guix text format, the profile (the root) first."""
    order = ["profile"] + sorted(n for n in items if n != "profile")
    with open(file, "w") as f:
        for name in order:
            refs = sorted(paths[r] for r in items[name].refs)
            f.write(f"{paths[name]}\n\n{len(refs)}\n" + "".join(r + "\n" for r in refs))


def describe(items: dict[str, Item], paths: dict[str, str]) -> dict:
    files = sum(len(i.files) for i in items.values())
    return {"items": len(items), "files": files, "symlinks": sum(len(i.links) for i in items.values()),
            "bytes": sum(s for i in items.values() for _, s, _, _ in i.files),
            "paths": sorted(paths[n] for n in items)}


def generate(root: str, size: int, seed: str = "speed", progress=None) -> dict:
    """Write the store and graphs under ROOT (which must not exist yet); return store.json's content."""
    a = plan(size, seed)
    b = application_change(a)
    pa, pb = store_paths(a, seed), store_paths(b, seed)
    tmp = root.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, STORE_DIR.lstrip("/")))
    os.makedirs(os.path.join(tmp, "graphs"))
    pools = Pools(seed)
    todo = [(a[n], pa[n]) for n in a] + [(b[n], pb[n]) for n in ("hello-app-2.2", "profile")]
    for done, (item, path) in enumerate(todo, 1):
        write_item(tmp, item, path, pa | pb, pools, seed)
        if progress:
            progress(done, len(todo))
    write_graph(os.path.join(tmp, "graphs", "A.refs"), a, pa)
    write_graph(os.path.join(tmp, "graphs", "B.refs"), b, pb)
    app_bytes = sum(s for _, s, _, _ in a["hello-app-2.1"].files)
    info = {"generator": "bench/gen_speed_store.py", "version": GEN_VERSION, "seed": seed, "size": size,
            "A": describe(a, pa), "B": describe(b, pb),
            "changed": {"removed": [pa["hello-app-2.1"], pa["profile"]],
                        "added": [pb["hello-app-2.2"], pb["profile"]],
                        "app_bytes": app_bytes}}
    with open(os.path.join(tmp, "store.json"), "w") as f:
        json.dump(info, f, indent=1)
    os.rename(tmp, root)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="directory to create (must not exist)")
    ap.add_argument("--size", default="300M", help="bytes of closure A, e.g. 300M, 1G, 4G (default 300M)")
    ap.add_argument("--seed", default="speed")
    args = ap.parse_args()
    if os.path.exists(args.root):
        ap.error(f"{args.root} exists")

    def progress(done, total):
        sys.stderr.write(f"\rgen_speed_store: {done}/{total} items")
    info = generate(args.root, parse_size(args.size), args.seed, progress if sys.stderr.isatty() else None)
    a = info["A"]
    sys.stderr.write(f"\ngen_speed_store: {a['items']} items, {a['files']} files, {a['symlinks']} symlinks, "
                     f"{a['bytes'] / 1e6:.0f} MB in closure A; the application holds "
                     f"{info['changed']['app_bytes'] / a['bytes']:.0%}\n")


if __name__ == "__main__":
    main()
