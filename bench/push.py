#!/usr/bin/env python3
"""Bytes a registry receives per update, for every layering strategy, measured on the wire.

    bench/push.py [--quick] [--max-layers 20,100] [--strategies ...] [ship.py's options]

ship.py's bench (the same generated store, updates, strategies, budgets and
pipeline, reused from ship.py and gen_store.py), with a real registry at the
end: for each strategy, budget and update it starts an empty docker-registry
on 127.0.0.1 (tests/support/registry.py) and pushes image A, then image B,
as the README's Deploying section does:

    skopeo copy --preserve-digests oci-archive:image.tar docker://HOST/bench:TAG

and reads B's push from the registry's access log: which of B's blobs got
`HEAD 200` (there already, not sent), which were uploaded and how many bytes
the registry received for each. It prints uploaded MB per update (layers; the
config, a few KB, apart), checks that the uploads are exactly B's layers
whose digest A lacks and that their bytes equal the sizes image-assemble
recorded (ship.py's `shipped`), and writes bench/results/push.md and
push.json. A fresh registry per push keeps skopeo from mounting a blob that
an earlier push left in another repository instead of uploading it.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import report  # noqa: E402
import ship  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

MB = 1e6


class PushBench(ship.Bench):
    keep_images = True

    def __init__(self, args, work: str):
        super().__init__(args, work)
        # Digests do not depend on the cache (tests/test_cache.py); ship.py measures them cold.
        self.shared_blobs = os.path.join(work, "blobs")

    def compare(self, a: dict, b: dict, name: str) -> dict:
        result = ship.measure(a, b)
        folder = Path(b["dir"]) / "registry"
        try:
            with Registry.start(folder) as reg:
                self.push(reg, a, "A")
                mark = reg.mark()
                self.push(reg, b, "B")
                log = reg.push_since(mark, "bench", "B")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if not self.args.keep:
                os.unlink(os.path.join(b["dir"], "image.tar"))
        result["push"] = check(a, b, log, name)
        return result

    def push(self, reg: Registry, run: dict, tag: str) -> None:
        # skopeo unpacks an oci-archive into TMPDIR (default /var/tmp): keep it in the run dir.
        argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests",
                "--dest-tls-verify=false", f"oci-archive:{run['dir']}/image.tar", reg.ref("bench", tag)]
        env = {**os.environ, "TMPDIR": run["dir"]}
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)}: exit status {done.returncode}\n{done.stderr}")


def check(a: dict, b: dict, log, name: str) -> dict:
    """What B's push sent, from the registry's log; RuntimeError if it is not what the image
    records predict (every new layer uploaded whole, every kept layer found, nothing else)."""
    old = {digest for digest, _ in a["image_layers"]}
    sizes = dict(b["image_layers"])
    new = {digest for digest in sizes if digest not in old}
    layers = {d: n for d, n in log.uploaded.items() if d in sizes}
    other = {d: n for d, n in log.uploaded.items() if d not in sizes}
    problems = []
    if set(layers) != new:
        problems.append(f"uploaded layers {sorted(layers)} are not the new ones {sorted(new)}")
    if any(layers[d] != sizes[d] for d in layers):
        problems.append("an upload's byte count differs from its layer's size")
    if any(log.heads.get(d) != 200 for d in sizes if d in old):
        problems.append("a layer A has was not found in the registry (HEAD not 200)")
    if log.mounted or len(other) != 1:
        problems.append(f"mounted {log.mounted}; blobs other than layers {sorted(other)}")
    if problems:
        raise RuntimeError(f"{name}: " + "; ".join(problems))
    return {"layer_bytes": sum(layers.values()), "layers_uploaded": len(layers),
            "layers_found": sum(1 for d in sizes if log.heads.get(d) == 200),
            "config_bytes": sum(other.values())}


def markdown(data: dict) -> str:
    cfg, updates = data["config"], data["config"]["updates"]
    a = cfg["closures"]["A"]
    out = [f"Closure A: {a['items']} store items, {a['bytes'] / MB:.0f} MB on disk ({cfg['packages']} packages, "
           f"scale {cfg['scale']}, seed `{cfg['seed']}`), layerpipe {cfg['layerpipe']}, {cfg['compression']}. "
           "Each cell: MB of layers the registry received when B was pushed after A (from its access log), "
           "then layers uploaded / layers B has. Every upload was one of B's layers whose digest A lacks, "
           "its byte count that layer's size; every other layer of B got HEAD 200; the config "
           "(a few KB) is not counted.", ""]
    out += ["| update | what changes |", "|---|---|"]
    out += [f"| {report.LABELS.get(u, u)} | {cfg['closures'][u]['what']} |" for u in updates]
    out += ["", "| strategy | max layers | A (MB) | " + " | ".join(report.LABELS.get(u, u) for u in updates) + " |",
            "|---|---:|---:|" + "---:|" * len(updates)]
    for strategy, max_layers, per in report.ordered(data):
        cells = " | ".join(f"{per[u]['push']['layer_bytes'] / MB:.2f} ({per[u]['push']['layers_uploaded']}/"
                           f"{per[u]['layers']})" for u in updates)
        name = f"**{strategy}**" if strategy == "stable" else strategy
        out.append(f"| {name} | {max_layers} | {per['A']['bytes'] / MB:.2f} | {cells} |")
    out += ["", f"{cfg['skopeo']}, docker-registry on 127.0.0.1 (one empty registry per push of B); "
            f"run time {cfg['seconds']:.0f} s on 2 cores shared with other jobs."]
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    args = ship.parse_args(argv, name="push", description=__doc__)
    start = time.monotonic()
    data = ship.run(args, PushBench)
    data["config"]["seconds"] = round(time.monotonic() - start, 1)
    data["config"]["skopeo"] = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, args.name)
    table = markdown(data)
    with open(base + ".md", "w") as f:
        f.write(table)
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    print(table)
    print(f"wrote {base}.md and {base}.json; run time {data['config']['seconds']:.0f} s")


if __name__ == "__main__":
    main()
