#!/usr/bin/env python3
"""Throughput of `closure-read --scan` next to reading the same bytes (issue 7).

    bench/scan.py [--size 1G] [--runs 3] [--keep]

Generates a store of --size bytes with gen_speed_store.py (about 200 items;
small, mid-size and large files; text, code-like and random bytes;
symlinks) and writes into each item of closure A a file naming the store
paths its graph says it refers to, as a real item names its dependencies
(RPATHs, scripts, nix-support files).  Then measures, in the same run, on
the same items, read from the page cache:

1. `cat`: every file of the items, `find ITEMS -type f -print0 | xargs -0
   cat > /dev/null`: the cost of reading the bytes at all;
2. `grep`: `grep -r -o -h -F -f HASHES ITEMS > /dev/null` with the items'
   hash parts as fixed strings: a single-threaded multi-string search;
3. `closure-read --scan -j 1` and `-j 0` (every CPU this process may use)
   on the list of A's store paths.

And, in this process, why --scan uses processes: the search
(scan.hashes_in) over 256 MB of the store's files held in memory, by one
thread and by one thread per CPU; CPython's bytes methods hold the GIL, so
threads do not add up.

Each command runs under GNU time (wall; CPU user + sys of the whole process
tree; peak RSS of its biggest process).  Each figure is the best of --runs
(the kinds interleaved round by round, so that a noisy neighbour hurts them
alike); the share of the CPUs other processes used meanwhile is shown.  The
references closure-read finds are checked against the graph.

Writes the table to bench/results/scan-<size>.md and everything to
scan-<size>.json.  --keep keeps the store in $XDG_CACHE_HOME/layerpipe-bench.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "lib"))
from gen_speed_store import generate, parse_size  # noqa: E402

from layerpipe.storepath import HASH_LEN  # noqa: E402

GNU_TIME = "/usr/bin/time"
CORES = len(os.sched_getaffinity(0))


def get_store(args, work: str) -> tuple[str, dict]:
    """The store (generated, or kept from an earlier --keep run) and its store.json."""
    base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "layerpipe-bench")
    root = os.path.join(base, f"scan-{args.size}") if args.keep else os.path.join(work, "store")
    if not os.path.exists(os.path.join(root, "store.json")):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(os.path.dirname(root), exist_ok=True)
        generate(root, parse_size(args.size), "scan")
        name_references(root)
    with open(os.path.join(root, "store.json")) as f:
        return root, json.load(f)


def read_graph(path: str) -> dict[str, list[str]]:
    """The Guix text graph: path -> references."""
    with open(path) as f:
        lines = f.read().split("\n")
    graph, i = {}, 0
    while i < len(lines) and lines[i]:
        count = int(lines[i + 2])
        graph[lines[i]] = lines[i + 3:i + 3 + count]
        i += 3 + count
    return graph


def name_references(root: str) -> None:
    """Write ITEM/share/references into every directory item of A: its references."""
    for path, refs in read_graph(os.path.join(root, "graphs", "A.refs")).items():
        item = os.path.join(root, path.lstrip("/"))
        if os.path.isdir(item) and not os.path.islink(item):
            os.makedirs(os.path.join(item, "share"), exist_ok=True)
            with open(os.path.join(item, "share", "references"), "w") as f:
                f.write("".join(f"{r}/lib\n" for r in refs))


def timed(argv: list[str], work: str, stdout: str = os.devnull) -> dict:
    """Run ARGV under GNU time: wall, cpu, rss (MB), others (share of CPUs used by other processes)."""
    tfile = os.path.join(work, "time")
    busy = _cpu_busy()
    start = time.perf_counter()
    with open(stdout, "wb") as out:
        subprocess.run([GNU_TIME, "-o", tfile, "-f", "%e %U %S %M", *argv], stdout=out, check=True)
    wall = time.perf_counter() - start
    busy = _cpu_busy() - busy
    with open(tfile) as f:
        _, user, system, rss = f.read().split()[-4:]
    cpu = float(user) + float(system)
    return {"wall": round(wall, 3), "cpu": round(cpu, 3), "rss": round(int(rss) / 1024, 1),
            "others": round(max(0.0, busy - cpu) / (wall * CORES), 3)}


def _cpu_busy() -> float:
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def file_bytes(dirs: list[str]) -> int:
    total = 0
    for top in dirs:
        if os.path.isfile(top) and not os.path.islink(top):
            total += os.path.getsize(top)
        for folder, _, files in os.walk(top):
            total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files
                         if not os.path.islink(os.path.join(folder, f)))
    return total


def commands(root: str, paths_file: str, hashes_file: str, items: list[str]) -> dict[str, list[str]]:
    quoted = " ".join(shlex.quote(i) for i in items)
    read = os.path.join(REPO, "bin", "closure-read")
    return {
        "cat": ["bash", "-c", f"find {quoted} -type f -print0 | xargs -0 cat > /dev/null"],
        "grep": ["bash", "-c", f"grep -r -o -h -F -f {shlex.quote(hashes_file)} {quoted} > /dev/null; "
                               "[ $? -le 1 ]"],
        "scan -j 1": [read, "--root", root, "--scan", "-q", "-j", "1", paths_file],
        f"scan -j 0 ({CORES} CPUs)": [read, "--root", root, "--scan", "-q", "-j", "0", paths_file],
    }


def check_references(root: str, output: str) -> dict:
    """What --scan found against the graph (items without their own files cannot name theirs)."""
    graph = read_graph(os.path.join(root, "graphs", "A.refs"))
    found = {r["path"]: r["references"] for r in map(json.loads, open(output)) if r["type"] == "path"}
    named = {p for p in graph if os.path.isdir(os.path.join(root, p.lstrip("/")))}
    missing = sum(len(set(graph[p]) - set(found[p])) for p in named)
    extra = sum(len(set(found[p]) - set(graph[p]) - {p}) for p in found)
    return {"graph_references": sum(len(r) for r in graph.values()),
            "found_references": sum(len(r) for r in found.values()),
            "missing_in_named_items": missing, "not_in_graph": extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as work:
        root, info = get_store(args, work)
        items = [os.path.join(root, p.lstrip("/")) for p in info["A"]["paths"]]
        paths_file, hashes_file = os.path.join(work, "A.paths"), os.path.join(work, "hashes")
        with open(paths_file, "w") as f:
            f.writelines(f"{p}\n" for p in info["A"]["paths"])
        with open(hashes_file, "w") as f:
            f.writelines(f"{os.path.basename(p)[:HASH_LEN]}\n" for p in info["A"]["paths"])
        nbytes = file_bytes(items)
        cmds = commands(root, paths_file, hashes_file, items)
        timed(cmds["cat"], work)  # into the page cache
        output = os.path.join(work, "out.ndjson")
        runs: dict[str, list[dict]] = {name: [] for name in cmds}
        for round_ in range(args.runs):
            for name, argv in cmds.items():
                runs[name].append(timed(argv, work, output if name.startswith("scan") else os.devnull))
                sys.stderr.write(f"\rscan bench: round {round_ + 1}/{args.runs}, {name:<24}")
        sys.stderr.write("\n")
        result = {"size": args.size, "items": len(items), "file_bytes": nbytes, "cpus": CORES,
                  "python": sys.version.split()[0], "references": check_references(root, output),
                  "threads": thread_check(items),
                  "best": {name: best(ms) for name, ms in runs.items()}, "runs": runs}
    report(result)


def thread_check(items: list[str], limit: int = 256 << 20) -> dict:
    """MB/s of scan.hashes_in over LIMIT bytes of the items' files, in memory,
    by 1 thread and by CORES threads."""
    from concurrent.futures import ThreadPoolExecutor
    from layerpipe import scan
    pieces, held = [], 0
    for top in items:
        for folder, _, files in os.walk(top):
            for name in files:
                path = os.path.join(folder, name)
                if held < limit and not os.path.islink(path):
                    with open(path, "rb") as f:
                        data = f.read(scan.CHUNK)
                    pieces.append(data)
                    held += len(data)
    candidates = frozenset(os.path.basename(p)[:HASH_LEN].encode() for p in items)
    result = {"bytes": held}
    for threads in sorted({1, CORES}):
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda piece: scan.hashes_in(piece, candidates), pieces))
        result[f"{threads} threads MB/s"] = round(held / (time.perf_counter() - start) / 1e6)
    return result


def best(measures: list[dict]) -> dict:
    return {"wall": min(m["wall"] for m in measures), "cpu": min(m["cpu"] for m in measures),
            "rss": max(m["rss"] for m in measures), "others": max(m["others"] for m in measures)}


def report(res: dict) -> None:
    mb = res["file_bytes"] / 1e6
    best_ = res["best"]
    cat, grep = best_["cat"]["wall"], best_["grep"]["wall"]
    lines = [f"# closure-read --scan, {res['size']} store", "",
             f"{res['items']} items, {mb:.0f} MB of file data, page cache warm, {res['cpus']} CPUs, "
             f"Python {res['python']}; best of {len(res['runs']['cat'])} runs.", "",
             "| command | wall s | MB/s | CPU s | peak RSS MB | wall / cat | wall / grep | others' CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in best_.items():
        lines.append(f"| {name} | {m['wall']:.2f} | {mb / m['wall']:.0f} | {m['cpu']:.2f} | {m['rss']:.0f} | "
                     f"{m['wall'] / cat:.2f}x | {m['wall'] / grep:.2f}x | {m['others']:.0%} |")
    refs = res["references"]
    lines += ["", f"References: the graph has {refs['graph_references']}, --scan found "
              f"{refs['found_references']}; of those the graph lists for items with files "
              f"(which name them), {refs['missing_in_named_items']} missed; "
              f"{refs['not_in_graph']} found that the graph lacks (besides self-references).", "",
              f"The search alone (scan.hashes_in) on {res['threads']['bytes'] / 1e6:.0f} MB in memory, in "
              "threads of this process: " + ", ".join(f"{k} {v}" for k, v in res["threads"].items()
                                                        if k != "bytes") +
              " (threads do not add up: the GIL; hence worker processes).", ""]
    text = "\n".join(lines)
    print(text)
    out = os.path.join(HERE, "results", f"scan-{res['size']}")
    with open(out + ".md", "w") as f:
        f.write(text)
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
