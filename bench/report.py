"""The bench's table (markdown), the check of issue 3's targets, and the chart (PNG).

The chart uses matplotlib when it is installed (`pip install matplotlib`);
otherwise a small pure-Python PNG writer draws the same bars without text.

    python3 bench/report.py RESULT.json...

prints one line per result file (a seed, a revision) and budget: shipped/ideal
per update for stable, auto and popularity, to compare runs side by side.
"""
import json
import math
import sys
import struct
import zlib

MB = 1e6
LABELS = {"app": "app-only", "lib": "library", "libc": "libc", "sibling": "sibling"}
COLORS = {"single": (150, 150, 150), "two-layer": (100, 100, 100), "size": (230, 160, 40),
          "popularity": (70, 130, 200), "auto": (120, 190, 90), "stable": (200, 50, 50)}


ORDER = ("single", "two-layer", "size", "popularity", "auto", "stable")


def ordered(data: dict):
    """(strategy, max layers, results per update), by budget, then in ORDER."""
    rows = []
    for key, per_update in data["results"].items():
        strategy, max_layers = key.rsplit("@", 1)
        rank = ORDER.index(strategy) if strategy in ORDER else len(ORDER)
        rows.append((int(max_layers), rank, strategy, per_update))
    for max_layers, _, strategy, per_update in sorted(rows, key=lambda row: row[:3]):
        yield strategy, max_layers, per_update


def ratio(data: dict, per_update: dict, update: str) -> float:
    ideal = data["ideal"][update]["bytes"]
    return per_update[update]["shipped"] / ideal if ideal else math.inf


def markdown(data: dict) -> str:
    cfg, updates = data["config"], data["config"]["updates"]
    a = cfg["closures"]["A"]
    out = [f"Closure A: {a['items']} store items, {a['bytes'] / MB:.0f} MB on disk "
           f"({cfg['packages']} packages, scale {cfg['scale']}, seed `{cfg['seed']}`); "
           f"layers compressed with {cfg['compression']}; stable's B built with `--previous` = A's "
           f"{'image.tar' if cfg['previous_form'] == 'image' else 'layer-tar records'}.", ""]
    out += ["| update | what changes | new items | ideal (MB) |", "|---|---|---:|---:|"]
    for u in updates:
        c = cfg["closures"][u]
        out.append(f"| {LABELS.get(u, u)} | {c['what']} | {c['new_items']} | {data['ideal'][u]['bytes'] / MB:.2f} |")
    out += ["", "Shipped MB and shipped/ideal per update; layers: image A, then image B per update "
            "(top layer included).", ""]
    head = "| strategy | max layers | " + " | ".join(f"{LABELS.get(u, u)} MB | ×ideal" for u in updates)
    out += [head + " | layers A; B |", "|---|---:|" + "---:|---:|" * len(updates) + "---|"]
    for strategy, max_layers, per in ordered(data):
        cells = " | ".join(f"{per[u]['shipped'] / MB:.2f} | {ratio(data, per, u):.2f}" for u in updates)
        layers = f"{per['A']['layers']}; " + "/".join(str(per[u]["layers"]) for u in updates)
        name = f"**{strategy}**" if strategy == "stable" else strategy
        out.append(f"| {name} | {max_layers} | {cells} | {layers} |")
    out += ["", *_chain_table(data, updates), "", *targets(data), "", f"Run time {cfg['seconds']:.0f} s, {cfg.get('cpu_seconds', 0):.0f} CPU-seconds in the "
            f"pipelines, load average {cfg.get('load_average', [0, 0])[1]} over the last 5 minutes; "
            f"{cfg['tar_runs']} layer-tar runs; layerpipe {cfg['layerpipe']} (bin+lib sha256 {cfg['code_sha256']}...).", ""]
    return "\n".join(out)


def _chain_table(data: dict, updates: list[str]) -> list[str]:
    """Shipped/ideal when layers are matched by ChainID, as Docker's pull does
    (a layer whose base changed is fetched again), next to the digest measure."""
    rows = list(ordered(data))
    if not rows or "shipped_by_chain" not in rows[0][2][updates[0]]:
        return []
    out = ["Matched by ChainID instead of digest (Docker's layer store: a kept layer above a changed one "
           "is pulled again), shipped/ideal:", "",
           "| strategy | max layers | " + " | ".join(LABELS.get(u, u) for u in updates) + " |",
           "|---|---:|" + "---:|" * len(updates)]
    for strategy, m, per in rows:
        cells = " | ".join(f"{per[u]['shipped_by_chain'] / data['ideal'][u]['bytes']:.2f}" for u in updates)
        out.append(f"| {strategy} | {m} | {cells} |")
    return out


def targets(data: dict) -> list[str]:
    """Issue 3's acceptance targets for stable, each met or missed, with the numbers."""
    rows = {(s, m): per for s, m, per in ordered(data)}
    if not any(s == "stable" for s, _ in rows):
        return []
    lines = ["Issue 3's targets for stable:", ""]

    def check(ok: bool, text: str) -> None:
        lines.append(f"- {'met' if ok else '**MISSED**'}: {text}")

    for m in sorted({m for s, m in rows if s == "stable"}):
        per = rows[("stable", m)]
        for u, limit in (("app", 1.1), ("sibling", 1.1)) + ((("lib", 1.2),) if m == 20 else ()):
            if u in per:
                r = ratio(data, per, u)
                check(r <= limit, f"{LABELS[u]} at {m} layers: {r:.3f}x ideal (at most {limit}x)")
        for u in data["config"]["updates"]:
            rivals = {s: rows[(s, m)][u]["shipped"] for s in ("popularity", "auto") if (s, m) in rows}
            if rivals:
                _versus(lines, data, u, m, per[u]["shipped"], rivals)
    return lines


def _versus(lines: list, data: dict, u: str, m: int, mine: int, rivals: dict) -> None:
    """Never more than popularity or auto (1% slack: tar headers and gzip framing
    differ between layerings); clearly less (at most 0.9x the better one) on
    the updates other than libc, unless there is no room for it: the better
    one is within 1.1x ideal, or stable within 1.02x."""
    best = min(rivals.values())
    ideal = data["ideal"][u]["bytes"]
    text = (f"{LABELS.get(u, u)} at {m} layers: stable {mine / MB:.2f} MB vs "
            + ", ".join(f"{s} {v / MB:.2f}" for s, v in rivals.items()) + f" ({mine / best:.2f}x the better)")
    if mine > best * 1.01:
        lines.append(f"- **MISSED**: {text}: more than popularity or auto")
    elif u == "libc":
        lines.append(f"- met: {text}: never more (1% slack)")
    elif mine <= 0.9 * best:
        lines.append(f"- met: {text}: clearly less (at most 0.9x)")
    elif best <= 1.1 * ideal or mine <= 1.02 * ideal:
        lines.append(f"- n/a: {text}: not more, and stable is at {mine / ideal:.2f}x ideal, "
                     f"the better one at {best / ideal:.2f}x: no room to be clearly less")
    else:
        lines.append(f"- **MISSED**: {text}: not clearly less (at most 0.9x)")


# ---------------------------------------------------------------- chart

def chart(data: dict, path: str) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _png_chart(data, path)
        return "pure-Python PNG, no labels: pip install matplotlib for a labelled chart"
    _matplotlib_chart(plt, data, path)
    return "matplotlib"


def _series(data: dict):
    """{max_layers: [(strategy, [ratio per update])]}"""
    panels: dict[int, list] = {}
    for strategy, m, per in ordered(data):
        panels.setdefault(m, []).append((strategy, [ratio(data, per, u) for u in data["config"]["updates"]]))
    return dict(sorted(panels.items()))


def _matplotlib_chart(plt, data: dict, path: str) -> None:
    updates = data["config"]["updates"]
    panels = _series(data)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), sharey=True, squeeze=False)
    for ax, (m, series) in zip(axes[0], panels.items()):
        width = 0.8 / len(series)
        for i, (strategy, ratios) in enumerate(series):
            xs = [u + (i - (len(series) - 1) / 2) * width for u in range(len(updates))]
            bars = ax.bar(xs, ratios, width, label=strategy, color=[c / 255 for c in COLORS.get(strategy, (0, 0, 0))])
            for bar, r in zip(bars, ratios):
                ax.text(bar.get_x() + bar.get_width() / 2, r * 1.04, f"{r:.2f}" if r < 10 else f"{r:.0f}",
                        ha="center", va="bottom", fontsize=6, rotation=90)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(1.1, color="red", linewidth=0.8, linestyle="--")
        ax.axhline(1.2, color="red", linewidth=0.6, linestyle=":")
        ax.set_xticks(range(len(updates)), [LABELS.get(u, u) for u in updates])
        ax.set_title(f"--max-layers {m}")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("shipped / ideal (log; dashed 1.1x, dotted 1.2x)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    cfg = data["config"]
    fig.suptitle(f"Bytes shipped per update over the floor: {cfg['closures']['A']['items']} store items, "
                 f"{cfg['closures']['A']['bytes'] / MB:.0f} MB", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _png_chart(data: dict, path: str) -> None:
    """Bars on a log axis (1x to 1000x), one panel per budget; dashed line at 1.1x."""
    panels = _series(data)
    pw, h, pad = 520, 360, 30
    w = pw * len(panels)
    px = [[(255, 255, 255)] * w for _ in range(h)]
    top = math.log10(1000)

    def y_of(r: float) -> int:
        return h - pad - int((h - 2 * pad) * min(max(math.log10(max(r, 1e-3)), 0), top) / top)

    for p, (_, series) in enumerate(panels.items()):
        x0 = p * pw + pad
        for r, color in ((1, (0, 0, 0)), (1.1, (220, 0, 0)), (10, (200, 200, 200)), (100, (200, 200, 200))):
            for x in range(x0, x0 + pw - 2 * pad):
                if r != 1.1 or x % 6 < 3:
                    px[y_of(r)][x] = color
        groups = len(series[0][1]) if series else 0
        gw = (pw - 2 * pad) // max(groups, 1)
        bw = max(2, (gw - 10) // max(len(series), 1))
        for s, (strategy, ratios) in enumerate(series):
            for g, r in enumerate(ratios):
                left = x0 + g * gw + 5 + s * bw
                for y in range(y_of(r), h - pad):
                    for x in range(left, left + bw - 1):
                        px[y][x] = COLORS.get(strategy, (0, 0, 0))
    rows = b"".join(b"\0" + bytes(c for rgb in row for c in rgb) for row in px)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def summary(files: list[str]) -> str:
    """Shipped/ideal of stable, auto and popularity, one row per file and budget."""
    out = ["| run | max layers | strategy | " + " | ".join(LABELS.values()) + " |",
           "|---|---:|---|" + "---:|" * len(LABELS)]
    for name in files:
        with open(name) as f:
            data = json.load(f)
        cfg = data["config"]
        for strategy, m, per in ordered(data):
            if strategy not in ("popularity", "auto", "stable"):
                continue
            cells = " | ".join(f"{ratio(data, per, u):.2f}" if u in per else "" for u in LABELS)
            label = f"seed `{cfg['seed']}`, {cfg['layerpipe']}"
            out.append(f"| {label} | {m} | {strategy} | {cells} |")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: report.py RESULT.json...")
    print(summary(sys.argv[1:]))
