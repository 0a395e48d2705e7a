#!/usr/bin/env python3
"""Speed and memory of layerpipe next to tar | gzip and tar | zstd (issue 4).

    bench/speed.py [--size 300M] [--runs 3] [--keep] [--quick] [--parts store,startup,graph]

Generates a store of --size bytes (gen_speed_store.py: ~200 items, small,
mid-size and large files, symlinks, text, code-like and random contents)
and its application-only change, then measures, in the same run:

1. the baseline a Guix user has, `tar --sort=name --mtime=@1 --owner=0
   --group=0 --numeric-owner -cf - ITEMS | gzip -6 > out` and the same with
   `zstd -T0 -3`;
2. layerpipe cold (empty blob dir), gzip -6 and zstd -3:
   `closure-read --root R A.refs | layer-split | layer-tar --root R --blob-dir D ...`;
3. layerpipe warm: the application-only change (B.refs) into the blob dir
   the cold run filled, with `layer-split --previous A-records` (the cold
   run's layer-tar output), as a user of the default strategy (stable)
   rebuilds: the layers of A that still fit are kept, so only the layers of
   the new items are tarred;
4. the start-up of each command: `--help`, and a real run on a one-item
   store (what each stage of a pipeline pays), with the imports of that run
   (`python3 -X importtime`);
5. closure-read | layer-split on a 100,000-path graph (graph100k.py), for
   each strategy (a run is killed after --graph-timeout).

Every command runs under GNU time (`/usr/bin/time -f '%e %U %S %M'`): wall,
CPU (user + sys) and peak RSS per stage; so does the shell running the
whole pipeline (CPU of the whole process tree, peak RSS of its biggest
process; wall time from this script's clock).  Each measure is the best of
--runs (the lowest wall and CPU; the highest peak RSS, to be safe), the
kinds interleaved round by round so that a noisy neighbour hurts them
alike; the share of the CPUs other processes used during each run
(/proc/stat) is shown beside it, with a warning when it makes wall times
unreliable.  The store is read once before timing, so every run reads it
from the page cache.

Prints a table with the ratios and the issue's targets (PASS/FAIL) and
writes it to bench/results/speed-<size>.md, everything to
speed-<size>.json.  A run on a store over 1G compares its peak RSS with
speed-1G.json, as the issue's memory target asks.
--keep keeps the store (and the 100k graph) in
$XDG_CACHE_HOME/layerpipe-bench to rerun quickly; without it they are
generated in a temp dir and removed.

Needs GNU time (Debian: `apt-get install time`), GNU tar, gzip, and zstd for
the zstd rows (`apt-get install zstd`; without it they are skipped).
"""
import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.join(REPO, "bin")
sys.path.insert(0, HERE)
import gen_speed_store  # noqa: E402
import graph100k  # noqa: E402

GNU_TIME = "/usr/bin/time"
COMMANDS = ("closure-read", "layer-split", "layer-tar", "image-assemble")
STRATEGIES = ("two-layer", "size", "popularity", "auto", "stable")
LEVELS = {"gzip": 6, "zstd": 3}
TARGETS = {"cold_gzip": 0.6, "cold_zstd": 1.5, "warm": 0.2, "startup_ms": 150, "rss_mb": 150,
           "rss_growth": 0.10, "graph_s": 10}
MB = 1e6
CORES = len(os.sched_getaffinity(0))
BUSY = 0.10     # others' share of the CPUs above which a wall time is called unreliable


# ------------------------------------------------------------------ measuring

@dataclass
class Measure:
    wall: float                 # seconds
    cpu: float | None           # user + sys seconds, whole process tree (None: killed)
    rss: float | None           # peak RSS of the biggest process, MB
    stages: dict = field(default_factory=dict)   # name -> {wall, cpu, rss}
    timed_out: bool = False
    others: float | None = None  # share of all CPUs other processes used meanwhile (0-1)


class Failed(Exception):
    pass


def run_timed(stages: list[tuple[str, list[str]]], out: str, work: str, timeout: float | None = None) -> Measure:
    """Run STAGES as one shell pipeline > OUT, the pipeline and each stage under GNU time."""
    parts = []
    for name, argv in stages:
        parts.append(shlex.join(_timed(os.path.join(work, f"{name}.time"), argv)))
    script = f"set -o pipefail; {' | '.join(parts)} > {shlex.quote(out)} 2> {shlex.quote(os.path.join(work, 'stderr'))}"
    whole = os.path.join(work, "pipeline.time")
    busy = _cpu_busy()
    wall, status, timed_out = _wait(_timed(whole, ["bash", "-c", script]), timeout)
    busy = _cpu_busy() - busy
    if status and not timed_out:
        with open(os.path.join(work, "stderr"), errors="replace") as f:
            raise Failed(f"exit status {status}: {script}\n{f.read()[-3000:]}")
    total = _read_time(whole) or {"cpu": None, "rss": None}
    measure = Measure(wall, total["cpu"], total["rss"], timed_out=timed_out)
    if total["cpu"] is not None and busy == busy:   # busy is NaN without /proc/stat
        measure.others = round(max(0.0, busy - total["cpu"]) / (wall * CORES), 3)
    for name, _ in stages:
        measure.stages[name] = _read_time(os.path.join(work, f"{name}.time"))
    return measure


def _cpu_busy() -> float:
    """CPU seconds all processes have used since boot (/proc/stat; steal counts as used)."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return float("nan")
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _timed(tfile: str, argv: list[str]) -> list[str]:
    # GNU time, not wait4() here: a child's ru_maxrss starts from its parent's
    # RSS at fork time (kept across exec), which would charge this script's
    # memory to the command.
    return [GNU_TIME, "-o", tfile, "-f", "%e %U %S %M", *argv]


def _read_time(tfile: str) -> dict | None:
    """GNU time's last line: wall, user, sys, max RSS in KiB; None if the command was killed first."""
    try:
        with open(tfile) as f:
            e, u, s, m = f.read().split()[-4:]
        os.unlink(tfile)
        return {"wall": float(e), "cpu": float(u) + float(s), "rss": int(m) / 1024}
    except (OSError, ValueError):
        return None


def _wait(argv: list[str], timeout: float | None, **popen) -> tuple[float, int, bool]:
    """Run ARGV in its own process group: wall time, exit status, whether it was killed at TIMEOUT."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, start_new_session=True, **popen)
    killed = threading.Event()

    def kill():
        killed.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.start()
    try:
        status = proc.wait()
    except BaseException:       # Ctrl-C: the group has its own session, so it did not get the signal
        kill()
        raise
    finally:
        if timer:
            timer.cancel()
    wall = time.perf_counter() - start
    if killed.is_set():
        kill()      # whatever was left running in the group
    return wall, status, killed.is_set()


def best(measures: list[Measure]) -> Measure:
    """The lowest wall and CPU, the highest peak RSS, stage by stage too; runs killed at the timeout
    count only when all were."""
    done = [x for x in measures if not x.timed_out]
    if not done:
        return Measure(max(x.wall for x in measures), None, None, {}, timed_out=True)
    m = Measure(min(x.wall for x in done), min(x.cpu for x in done), max(x.rss for x in done),
                others=min(done, key=lambda x: x.wall).others)
    for name in done[0].stages:
        runs = [x.stages[name] for x in done if x.stages.get(name)]
        m.stages[name] = {"wall": min(r["wall"] for r in runs), "cpu": min(r["cpu"] for r in runs),
                          "rss": max(r["rss"] for r in runs)} if runs else None
    return m


# ------------------------------------------------------------------ the jobs

def baseline(root: str, items: list[str], compressor: str, out: str, work: str) -> tuple[Measure, int]:
    tar = ["tar", "--sort=name", "--mtime=@1", "--owner=0", "--group=0", "--numeric-owner",
           "-C", root, "-cf", "-", *items]
    comp = ["gzip", "-6"] if compressor == "gzip" else ["zstd", "-T0", "-3", "-q", "-c"]
    m = run_timed([("tar", tar), (compressor, comp)], out, work)
    return m, os.path.getsize(out)


def layerpipe(root: str, graph: str, compressor: str, blob_dir: str, out: str, work: str,
              previous: str | None = None) -> tuple[Measure, list]:
    stages = [("closure-read", [f"{BIN}/closure-read", "--root", root, graph]),
              ("layer-split", [f"{BIN}/layer-split", *(["--previous", previous] if previous else [])]),
              ("layer-tar", [f"{BIN}/layer-tar", "--root", root, "--blob-dir", blob_dir,
                             "--compress", compressor, "--level", str(LEVELS[compressor])])]
    m = run_timed(stages, out, work)
    with open(out) as f:
        layers = [r for r in map(json.loads, f) if r.get("type") == "layer"]
    return m, layers


def store_rounds(args, store: str, info: dict, work: str, compressors: list[str]) -> dict:
    items = [p.lstrip("/") for p in info["A"]["paths"]]
    graphs = {k: os.path.join(store, "graphs", f"{k}.refs") for k in "AB"}
    runs: dict[str, list] = {}
    extra: dict[str, dict] = {}
    for r in range(args.runs):
        for comp in compressors:
            at = f"round {r + 1}/{args.runs}, {comp}"
            m, size = baseline(store, items, comp, os.path.join(work, f"baseline.{comp}"), work)
            _note(runs, f"baseline_{comp}", m, f"{at}: tar | {comp}")
            extra[f"baseline_{comp}"] = {"output_bytes": size}
            blobs = os.path.join(work, f"blobs-{comp}")
            shutil.rmtree(blobs, ignore_errors=True)
            cold_out = os.path.join(work, f"A-{comp}.ndjson")
            m, cold = layerpipe(store, graphs["A"], comp, blobs, cold_out, work)
            _note(runs, f"cold_{comp}", m, f"{at}: layerpipe cold")
            extra[f"cold_{comp}"] = _layers(cold)
            m, warm = layerpipe(store, graphs["B"], comp, blobs, os.path.join(work, f"B-{comp}.ndjson"), work,
                                previous=cold_out)
            _note(runs, f"warm_{comp}", m, f"{at}: layerpipe warm (application-only change)")
            extra[f"warm_{comp}"] = _layers(warm, cold)
            shutil.rmtree(blobs)
    return {k: {"best": asdict(best(v)), "runs": [asdict(x) for x in v], **extra[k]} for k, v in runs.items()}


def _note(runs: dict, key: str, m: Measure, what: str) -> None:
    runs.setdefault(key, []).append(m)
    others = "" if m.others is None else f", others used {m.others:.0%} of the CPUs"
    say(f"{what}: {m.wall:.2f} s wall, {m.cpu:.2f} s CPU, {m.rss:.0f} MB{others}")


def _layers(layers: list, before: list | None = None) -> dict:
    """Sizes of a build's layers; with BEFORE, which of them it had to build anew."""
    known = {x["digest"] for x in before or []}
    new = [x for x in layers if x["digest"] not in known]
    return {"output_bytes": sum(x["size"] for x in layers), "layers": len(layers),
            "uncompressed_bytes": sum(x["uncompressed_size"] for x in layers),
            "new_layers": len(new), "new_uncompressed_bytes": sum(x["uncompressed_size"] for x in new)}


def startup(repeats: int, work: str) -> dict:
    """Each command's start-up: `--help`, and a real run on a one-item store, which is what a
    pipeline pays (typer may import more once it parses real arguments)."""
    python = shutil.which("python3") or sys.executable
    tiny = tiny_runs(work)
    env_pyc = None
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        env_pyc = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env_pyc["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")    # not into lib/
    result = {}
    busy, ours, started = _cpu_busy(), _children_cpu(), time.perf_counter()
    for cmd in COMMANDS:
        say(f"start-up: {cmd}")
        run = [f"{BIN}/{cmd}", *tiny[cmd]]
        help_ms, help_rss = _best_start([f"{BIN}/{cmd}", "--help"], repeats, work)
        run_ms, run_rss = _best_start(run, repeats, work)
        imports = min((import_time(python, run) for _ in range(repeats)), key=lambda x: x["total_ms"])
        result[cmd] = {"help_ms": help_ms, "run_ms": run_ms, "rss": max(help_rss, run_rss),
                       "import_ms": imports["total_ms"], "heaviest": imports["heaviest"]}
        if env_pyc:
            _best_start(run, 1, work, env_pyc)      # writes the bytecode
            result[cmd]["run_pyc_ms"] = _best_start(run, repeats, work, env_pyc)[0]
    others = (_cpu_busy() - busy) - (_children_cpu() - ours)
    for cmd in result:
        result[cmd]["others"] = round(max(0.0, others) / ((time.perf_counter() - started) * CORES), 3)
    return result


def tiny_runs(work: str) -> dict[str, list[str]]:
    """A one-item store, and each command's arguments for a real run on it (run once here)."""
    root = os.path.join(work, "tiny")
    path = gen_speed_store.make_store_path("/gnu/store", "hello-1.0", "speed")
    item = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.join(item, "bin"))
    with open(os.path.join(item, "bin", "hello"), "w") as f:
        f.write("#!/bin/sh\necho hello\n")
    os.symlink("hello", os.path.join(item, "bin", "hi"))
    with open(os.path.join(root, "graph.refs"), "w") as f:
        f.write(f"{path}\n\n0\n")
    rec = [os.path.join(root, f"{i}.ndjson") for i in range(4)]
    argv = {"closure-read": ["--root", root, os.path.join(root, "graph.refs")],
            "layer-split": [rec[0]],
            "layer-tar": ["--root", root, "--blob-dir", os.path.join(root, "blobs"), rec[1]],
            "image-assemble": ["-o", os.path.join(root, "image.tar"), rec[2]]}
    for cmd, out in zip(COMMANDS, rec):
        with open(out, "wb") as f:
            done = subprocess.run([f"{BIN}/{cmd}", *argv[cmd]], stdout=f, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise Failed(f"{cmd} on a one-item store: exit status {done.returncode}: {done.stderr[-2000:]}")
    return argv


def _best_start(argv: list[str], repeats: int, work: str, env: dict | None = None) -> tuple[float, float]:
    """The lowest wall time (ms) of ARGV over REPEATS runs, and the highest peak RSS (MB)."""
    walls, rss = [], []
    for _ in range(repeats):
        tfile = os.path.join(work, "start.time")
        wall, status, _ = _wait(_timed(tfile, argv), None, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        if status:
            raise Failed(f"{shlex.join(argv)}: exit status {status}")
        walls.append(wall * 1000)
        rss.append(_read_time(tfile)["rss"])
    return min(walls), max(rss)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_time(python: str, argv: list[str]) -> dict:
    """Import time of a run of ARGV (python -X importtime): from the first layerpipe import on,
    the sum of the top-level imports; and the heaviest imports layerpipe or typer make."""
    err = subprocess.run([python, "-X", "importtime", *argv], capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)) // 2, m.group(4)))
    top_level = [i for i, (_, depth, _) in enumerate(rows) if depth == 0]
    first = next(i for i in top_level if rows[i][2].startswith("layerpipe"))
    region = rows[max([i for i in top_level if i < first], default=-1) + 1:]
    total = sum(cum for cum, depth, _ in region if depth == 0)
    # A line's parent is the next line one level up: importtime prints children first.
    parent = [next((j for j in range(i + 1, len(region)) if region[j][1] == region[i][1] - 1), None)
              for i in range(len(region))]
    heavy = [i for i, (_, depth, name) in enumerate(region) if not name.startswith("layerpipe") and
             (depth == 0 or region[parent[i]][2].startswith("layerpipe"))]
    shown = []
    for i in sorted(heavy, key=lambda i: -region[i][0])[:4]:
        kids = [j for j in range(len(region)) if parent[j] == i]
        big = max(kids, key=lambda j: region[j][0], default=None)
        inner = f" ({region[big][2]} {region[big][0] / 1000:.0f} ms)" \
            if big is not None and region[big][0] > 0.4 * region[i][0] else ""
        shown.append(f"{region[i][2]} {region[i][0] / 1000:.0f} ms{inner}")
    return {"total_ms": total / 1000, "heaviest": shown}


def graph_runs(args, graph: str, work: str) -> dict:
    result = {}
    strategies = ("two-layer",) if args.quick else STRATEGIES
    for strategy in strategies:
        measures = []
        for r in range(args.graph_runs):
            say(f"100k graph: closure-read | layer-split -s {strategy} ({r + 1}/{args.graph_runs})")
            stages = [("closure-read", [f"{BIN}/closure-read", graph]),
                      ("layer-split", [f"{BIN}/layer-split", "--strategy", strategy])]
            m = run_timed(stages, os.devnull, work, timeout=args.graph_timeout)
            measures.append(m)
            say(f"  {m.wall:.1f} s wall" + (" (killed)" if m.timed_out else f", {m.cpu:.1f} s CPU, {m.rss:.0f} MB"))
            if m.timed_out:
                break       # one timeout tells enough
        result[strategy] = {"best": asdict(best(measures)), "runs": [asdict(x) for x in measures]}
    return result


# ------------------------------------------------------------------ store, graph, machine

def cache_dir(args) -> str:
    base = args.cache_dir or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                          "layerpipe-bench")
    return base


def get_store(args, size: int, work: str) -> tuple[str, dict]:
    name = f"speed-store-{args.size_label}-{args.seed}-v{gen_speed_store.GEN_VERSION}"
    root = os.path.join(cache_dir(args), name) if args.keep else os.path.join(work, name)
    if not os.path.exists(os.path.join(root, "store.json")):
        say(f"generating a {args.size_label} store in {root}")
        os.makedirs(os.path.dirname(root), exist_ok=True)
        started = time.perf_counter()
        gen_speed_store.generate(root, size, args.seed)
        say(f"generated in {time.perf_counter() - started:.1f} s")
    else:
        say(f"reusing the store in {root}")
    with open(os.path.join(root, "store.json")) as f:
        return root, json.load(f)


def get_graph(args, work: str) -> str:
    folder = cache_dir(args) if args.keep else work
    path = os.path.join(folder, f"graph100k-{args.graph_paths}-v1.json")
    if not os.path.exists(path):
        say(f"generating a {args.graph_paths}-path graph in {path}")
        os.makedirs(folder, exist_ok=True)
        text = json.dumps(graph100k.build(args.graph_paths, "graph100k"), separators=(",", ":"))
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return path


def warm_page_cache(root: str, paths: list[str]) -> None:
    """Read every file once, so that all runs find the store in the page cache."""
    for path in paths:
        for folder, _, files in os.walk(os.path.join(root, path.lstrip("/"))):
            for name in files:
                fs = os.path.join(folder, name)
                if not os.path.islink(fs):
                    with open(fs, "rb", buffering=0) as f:
                        while f.read(1 << 20):
                            pass


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass

    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True)
            return (out.stdout or out.stderr).splitlines()[0].strip("* ")
        except (OSError, IndexError):
            return None
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "lib", "bin"],
                           capture_output=True, text=True).stdout.strip()
    try:
        import zstandard
        zstd_lib = ".".join(map(str, zstandard.ZSTD_VERSION))
    except ImportError:
        zstd_lib = None
    return {"cores": len(os.sched_getaffinity(0)), "cpu": model, "memory_gb": _mem_gb(),
            "python": platform.python_version(), "kernel": platform.release(),
            "tar": version(["tar", "--version"]), "gzip": version(["gzip", "--version"]),
            "zstd": version(["zstd", "--version"]), "python_zstandard_libzstd": zstd_lib,
            "commit": rev + ("+uncommitted changes in lib/ or bin/" if dirty else ""),
            "load_before": os.getloadavg()}


def _mem_gb() -> float:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def check_tools() -> list[str]:
    """The compressors available; exits with an explanation when a required tool is missing."""
    problems = []
    try:
        ok = subprocess.run([GNU_TIME, "-f", "%e %U %S %M", sys.executable, "-c", ""], capture_output=True).returncode == 0
    except OSError:
        ok = False
    if not ok:
        problems.append(f"{GNU_TIME} (GNU time) is missing or is not GNU time: on Debian or Ubuntu, "
                        "`apt-get install time` (the shell keyword `time` cannot report peak memory)")
    for tool in ("tar", "gzip", "bash"):
        if not shutil.which(tool):
            problems.append(f"{tool} is missing: `apt-get install {tool}`")
    if problems:
        sys.exit("speed.py: cannot measure:\n  " + "\n  ".join(problems))
    compressors = ["gzip"]
    if shutil.which("zstd"):
        compressors.append("zstd")
    else:
        say("zstd is missing: the zstd rows are skipped (Debian: `apt-get install zstd`)")
    return compressors


def say(text: str) -> None:
    sys.stderr.write(f"speed.py: {text}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------ report

def _ratio(r: float, limit: float) -> str:
    """R to two places, or three where two would round onto LIMIT and hide the verdict."""
    return f"{r:.3f}x" if round(r, 2) == limit else f"{r:.2f}x"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def targets(res: dict) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, limit, ok) for every target of the issue this run can check."""
    out = []
    st = res.get("store", {})
    for comp, key, limit in (("gzip", "cold_gzip", TARGETS["cold_gzip"]), ("zstd", "cold_zstd", TARGETS["cold_zstd"])):
        if key in st:
            r = st[key]["best"]["wall"] / st[f"baseline_{comp}"]["best"]["wall"]
            out.append((f"cold {comp} wall / tar \\| {comp} wall", _ratio(r, limit), f"<= {limit}x", r <= limit))
    for comp in ("gzip", "zstd"):
        if f"warm_{comp}" in st:
            r = st[f"warm_{comp}"]["best"]["wall"] / st[f"cold_{comp}"]["best"]["wall"]
            out.append((f"warm {comp} wall / cold {comp} wall", _ratio(r, TARGETS["warm"]), f"<= {TARGETS['warm']}x",
                        r <= TARGETS["warm"]))
    for cmd, s in res.get("startup", {}).items():
        ms, how = (s["run_pyc_ms"], "run, .pyc cached") if "run_pyc_ms" in s else (s["run_ms"], "run")
        out.append((f"{cmd} start-up ({how} on a one-item store)", f"{ms:.0f} ms", f"< {TARGETS['startup_ms']} ms",
                    ms < TARGETS["startup_ms"]))
    if st:
        rss = max(st[k]["best"]["rss"] for k in st if not k.startswith("baseline"))
        note = "" if res["size_bytes"] >= 4 * 2**30 else f" (set for 4 GB; this store: {res['size_label']})"
        out.append((f"layerpipe peak RSS{note}", f"{rss:.0f} MB", f"< {TARGETS['rss_mb']} MB", rss < TARGETS["rss_mb"]))
        ref = res.get("rss_reference")
        if ref:
            growth = rss / ref["rss"] - 1
            out.append((f"peak RSS growth over the {ref['size_label']} run", f"{growth:+.0%}",
                        f"<= +{TARGETS['rss_growth']:.0%}", growth <= TARGETS["rss_growth"]))
    for strategy, g in res.get("graph", {}).items():
        b = g["best"]
        shown = f"> {res['graph_timeout']:.0f} s (killed)" if b["timed_out"] else f"{b['wall']:.1f} s"
        out.append((f"100k graph, closure-read \\| layer-split -s {strategy}", shown, f"< {TARGETS['graph_s']} s",
                    not b["timed_out"] and b["wall"] < TARGETS["graph_s"]))
    return out


def markdown(res: dict) -> str:
    lines = _header(res)
    if res.get("store"):
        lines += _store_table(res)
    if res.get("startup"):
        lines += _startup_table(res)
    if res.get("graph"):
        lines += _graph_table(res)
    busiest = max((m["others"] for m in _all_best(res) if m.get("others") is not None), default=None)
    if busiest is not None and busiest > BUSY:
        lines += ["", f"**Warning: other processes used up to {busiest:.0%} of the CPUs during the best runs.** "
                  "Wall times, and the ratios and start-up times built on them, are then unreliable; CPU times "
                  "and peak RSS much less so.  Rerun on a quiet machine to check the targets."]
    lines += ["", "## Targets (issue 4)", "", "| target | measured | limit | |", "|---|---:|---:|---|"]
    lines += [f"| {t} | {m} | {lim} | {verdict(ok)} |" for t, m, lim, ok in res["targets"]]
    return "\n".join(lines) + "\n"


def _header(res: dict) -> list[str]:
    mach, store = res["machine"], res.get("store_info")
    lines = [f"# layerpipe speed: {res['size_label']} store", "",
             f"Command: `{res['command']}`  ", f"Date: {res['date']}, commit {mach['commit']}  ",
             f"Machine: {mach['cores']} cores available (os.sched_getaffinity), {mach['cpu']}, "
             f"{mach['memory_gb']} GiB RAM; load average {_load(mach['load_before'])} before, "
             f"{_load(res['load_after'])} after  ",
             f"Tools: {mach['tar']}; {mach['gzip']}; {mach['zstd']}; Python {mach['python']}, "
             f"libzstd {mach['python_zstandard_libzstd']} (python-zstandard)  "]
    if store:
        a, app = store["A"], store["changed"]["app_bytes"]
        lines += [f"Store (closure A): {a['items']} items, {a['files']} files, {a['symlinks']} symlinks, "
                  f"{a['bytes']:,} bytes of file contents ({a['bytes'] / MB:.0f} MB); the application-only "
                  f"change replaces an item of {app / MB:.0f} MB ({app / a['bytes']:.0%}) and the profile  ",
                  f"Best of {res['runs']} runs (lowest wall and CPU, highest peak RSS); the store is in the "
                  "page cache; layer-tar fsyncs each blob, the baselines write without fsync."]
    return lines + [""]


def _startup_table(res: dict) -> list[str]:
    first = next(iter(res["startup"].values()))
    pyc = "run_pyc_ms" in first
    lines = ["", "## Start-up", "", f"Best of {res['startup_repeats']}; a run is the command on a one-item store "
             "(what each stage of a pipeline pays); imports are those of that run (`python3 -X importtime`); "
             f"others' CPU during the whole section: {_others(first)}."]
    if pyc:
        lines += ["", "PYTHONDONTWRITEBYTECODE is set here, so every start compiles layerpipe's modules anew; "
                  "the column `run, .pyc cached` (PYTHONPYCACHEPREFIX) is what a pip install or a checkout "
                  "without that variable pays, and the one the target is checked on."]
    lines += ["", "| command | `--help` | run | " + ("run, .pyc cached | " if pyc else "") +
              "peak RSS | imports | heaviest imports (cumulative) |",
              "|---|---:|---:|" + ("---:|" if pyc else "") + "---:|---:|---|"]
    for cmd, s in res["startup"].items():
        cached = f" {s['run_pyc_ms']:.0f} ms |" if pyc else ""
        lines.append(f"| {cmd} | {s['help_ms']:.0f} ms | {s['run_ms']:.0f} ms |{cached} {s['rss']:.0f} MB "
                     f"| {s['import_ms']:.0f} ms | {', '.join(s['heaviest'])} |")
    return lines


def _graph_table(res: dict) -> list[str]:
    lines = ["", f"## closure-read | layer-split on a {res['graph_paths']:,}-path graph", "",
             f"graph100k.py, JSON list form with narSize (no disk read); best of {res['graph_runs']}; "
             f"killed after {res['graph_timeout']:.0f} s.", "",
             "| strategy | wall | CPU | peak RSS | closure-read wall / CPU / RSS | layer-split wall / CPU / RSS "
             "| others' CPU |", "|---|---:|---:|---:|---:|---:|---:|"]
    for strategy, g in res["graph"].items():
        b = g["best"]
        wall = f"> {res['graph_timeout']:.0f} s (killed)" if b["timed_out"] else f"{b['wall']:.1f} s"
        cpu, rss = ("?", "?") if b["timed_out"] else (f"{b['cpu']:.1f} s", f"{b['rss']:.0f} MB")
        stages = b["stages"]
        lines.append(f"| {strategy} | {wall} | {cpu} | {rss} | {_stage(stages.get('closure-read'))} "
                     f"| {_stage(stages.get('layer-split'))} | {_others(b)} |")
    return lines


def _all_best(res: dict) -> list[dict]:
    return [v["best"] for part in ("store", "graph") for v in res.get(part, {}).values()] + \
        list(res.get("startup", {}).values())


def _load(avg) -> str:
    return "/".join(f"{x:.1f}" for x in avg)


def _stage(s) -> str:
    return "killed" if not s else f"{s['wall']:.1f} s / {s['cpu']:.1f} s / {s['rss']:.0f} MB"


def _store_table(res: dict) -> list[str]:
    st = res["store"]
    rows = ["## Building the image", "",
            "| run | wall | CPU | peak RSS | output | ratio | target | | others' CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for comp in ("gzip", "zstd"):
        if f"baseline_{comp}" not in st:
            continue
        base, cold, warm = (st[f"{k}_{comp}"] for k in ("baseline", "cold", "warm"))
        label = f"gzip -{LEVELS['gzip']}" if comp == "gzip" else "zstd -T0 -3"
        rows.append(_row(f"tar \\| {label}", base["best"], base["output_bytes"], "1.00x baseline", "", None))
        rows += _stage_rows(base["best"])
        r = cold["best"]["wall"] / base["best"]["wall"]
        limit = TARGETS[f"cold_{comp}"]
        rows.append(_row(f"layerpipe cold, {comp} (closure-read \\| layer-split \\| layer-tar)", cold["best"],
                         cold["output_bytes"], f"{_ratio(r, limit)} baseline", f"<= {limit}x", r <= limit))
        rows += _stage_rows(cold["best"])
        r = warm["best"]["wall"] / cold["best"]["wall"]
        rebuilt = f"{warm['new_layers']} of {warm['layers']} layers new, " \
                  f"{warm['new_uncompressed_bytes'] / max(1, warm['uncompressed_bytes']):.0%} of the bytes"
        rows.append(_row(f"layerpipe warm, {comp}, application-only change, --previous A ({rebuilt})", warm["best"],
                         warm["output_bytes"], f"{_ratio(r, TARGETS['warm'])} cold", f"<= {TARGETS['warm']}x", r <= TARGETS["warm"]))
        rows += _stage_rows(warm["best"])
    rows += ["", "Stage rows: each command under GNU time inside the pipeline; layer-tar reads all its input "
             "before it starts, so its wall time includes the stages before it.  Others' CPU: the share of "
             f"the {CORES} CPUs that other processes used during that run (/proc/stat)."]
    return rows


def _row(name, m, output, ratio, limit, ok) -> str:
    return (f"| {name} | {m['wall']:.2f} s | {m['cpu']:.2f} s | {m['rss']:.0f} MB | {output / MB:.1f} MB "
            f"| {ratio} | {limit} | {verdict(ok) if limit else ''} | {_others(m)} |")


def _others(m) -> str:
    return "?" if m.get("others") is None else f"{m['others']:.0%}"


def _stage_rows(m) -> list[str]:
    return [f"| &nbsp;&nbsp;{name} | {s['wall']:.2f} s | {s['cpu']:.2f} s | {s['rss']:.0f} MB | | | | | |"
            for name, s in m["stages"].items() if s]


# ------------------------------------------------------------------ main

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", help="bytes of the store, e.g. 300M, 1G, 4G (default 300M; 100M with --quick)")
    ap.add_argument("--runs", type=int, help="runs of each measure, the best kept (default 3; 1 with --quick)")
    ap.add_argument("--keep", action="store_true", help="keep the store and graph in the cache dir, and reuse them")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 100M store, one run, start-up twice, the 100k graph with two-layer only")
    ap.add_argument("--parts", default="store,startup,graph", help="what to measure (default store,startup,graph)")
    ap.add_argument("--seed", default="speed")
    ap.add_argument("--graph-paths", type=int, default=100_000)
    ap.add_argument("--graph-runs", type=int, help="runs of each 100k-graph measure (default 1: it is slow)")
    ap.add_argument("--graph-timeout", type=float, default=60, help="seconds before a 100k-graph run is killed (default 60)")
    ap.add_argument("--cache-dir", help="where --keep keeps stores (default $XDG_CACHE_HOME/layerpipe-bench)")
    ap.add_argument("--work-dir", help="where outputs and blob dirs go (default: a temp dir, removed after)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"), help="where the .md and .json go")
    args = ap.parse_args()
    args.size = args.size or ("100M" if args.quick else "300M")
    args.runs = args.runs or (1 if args.quick else 3)
    args.graph_runs = args.graph_runs or 1
    args.parts = set(args.parts.split(","))
    if args.parts - {"store", "startup", "graph"} or args.runs < 1:
        ap.error("--parts takes store, startup and graph, comma-separated; --runs at least 1")
    args.size_bytes = gen_speed_store.parse_size(args.size)
    args.size_label = args.size.upper().replace("IB", "").replace("B", "")
    return args


def main() -> None:
    args = parse_args()
    compressors = check_tools()
    res = {"command": shlex.join(["bench/speed.py", *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d %H:%M"),
           "size_label": args.size_label, "size_bytes": args.size_bytes, "runs": args.runs,
           "graph_runs": args.graph_runs, "graph_timeout": args.graph_timeout, "graph_paths": args.graph_paths,
           "machine": machine()}
    say(f"{res['machine']['cores']} cores; load average {_load(res['machine']['load_before'])}")
    work = tempfile.mkdtemp(prefix="layerpipe-speed-", dir=args.work_dir)
    try:
        if "store" in args.parts:
            store, info = get_store(args, args.size_bytes, work)
            res["store_info"] = {k: v for k, v in info.items() if k not in ("A", "B")} | \
                {k: {x: y for x, y in info[k].items() if x != "paths"} for k in "AB"}
            warm_page_cache(store, info["A"]["paths"] + info["changed"]["added"])
            res["store"] = store_rounds(args, store, info, work, compressors)
            res["rss_reference"] = rss_reference(args, res)
        if "startup" in args.parts:
            res["startup_repeats"] = 2 if args.quick else 5
            res["startup"] = startup(res["startup_repeats"], work)
        if "graph" in args.parts:
            res["graph"] = graph_runs(args, get_graph(args, work), work)
    except Failed as exc:
        sys.exit(f"speed.py: a measured command failed: {exc}")
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["load_after"] = os.getloadavg()
    res["targets"] = targets(res)
    report = markdown(res)
    os.makedirs(args.results, exist_ok=True)
    base = os.path.join(args.results, f"speed-{args.size_label}")
    with open(base + ".md", "w") as f:
        f.write(report)
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1)
    print(report)
    say(f"wrote {base}.md and {base}.json")


def rss_reference(args, res: dict) -> dict | None:
    """The 1G run's peak RSS, for the growth target of bigger stores."""
    if args.size_bytes <= 2**30:
        return None
    try:
        with open(os.path.join(args.results, "speed-1G.json")) as f:
            ref = json.load(f)
        rss = max(ref["store"][k]["best"]["rss"] for k in ref["store"] if not k.startswith("baseline"))
        return {"size_label": ref["size_label"], "rss": rss}
    except (OSError, KeyError, ValueError):
        return None


if __name__ == "__main__":
    main()
