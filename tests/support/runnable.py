"""Runnable test images, built through the real pipeline (bin/), and what running them prints.

`make_store` puts two closures under one ROOT: the test store (tests/support/store.py: long and
non-ASCII names, symlinks, hard links; APP_TEXT changes only its application) and the demo
store (examples/make-demo-store.py: a static busybox and a `hello` script). `tar_layers` runs
closure-read | layer-split | layer-tar, `assemble` runs image-assemble with the entry point
below: a shell that prints the greeting, the environment it was given, the working directory,
whether /tmp is writable, and the test store's application's own output.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

from .store import build_store

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"
SCRIPT = ('hello; echo "FOO=$FOO"; echo "PATH=$PATH"; pwd; touch /tmp/probe && echo tmp-writable;'
          ' app')


def demo_module():
    spec = importlib.util.spec_from_file_location("demo_store", REPO / "examples" / "make-demo-store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_store(tmp: Path, app_text: str = "v1") -> dict:
    """Both stores under TMP/root and their joint graph TMP/graph.refs; returns store paths and
    the `path` (PATH) and `app_text` the image's environment and application will show."""
    root = tmp / "root"
    store = build_store(str(root), app_text=app_text)
    demo = demo_module().make(str(root), "/gnu/store", str(tmp / "demo.refs"))
    graph = tmp / "graph.refs"
    graph.write_text(store.graph_text() + (tmp / "demo.refs").read_text())
    busybox, profile = demo["busybox"], store.paths["profile"]
    return {"root": root, "graph": graph, "busybox": busybox, "app_text": app_text,
            "path": f"{demo['hello']}/bin:{profile}/bin:{busybox}/bin"}


def sh(command: str, timeout: float = 300) -> None:
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode:
        raise AssertionError(f"{command}: exit status {proc.returncode}\n{proc.stderr}")


def tar_layers(store: dict, out: Path, *, blob_dir: Path, compress: str = "gzip",
               split: str = "") -> Path:
    """closure-read | layer-split SPLIT | layer-tar --compress COMPRESS > OUT."""
    sh(f"{BIN}/closure-read --root {store['root']} {store['graph']} | {BIN}/layer-split {split}"
       f" | {BIN}/layer-tar -q --compress {compress} --root {store['root']} --blob-dir {blob_dir}"
       f" > {out}")
    return out


def assemble(store: dict, layers: Path, fmt: str, out: Path, tag: str) -> dict:
    """image-assemble FMT -o OUT; returns its image record."""
    busybox = store["busybox"]
    proc = subprocess.run(
        [f"{BIN}/image-assemble", "--format", fmt, "-o", str(out), "--tag", tag,
         "--entrypoint", f"{busybox}/bin/sh", "-A", "-c", "--cmd", SCRIPT,
         "--env", f"PATH={store['path']}", "--env", "FOO=bar", "--workdir", "/tmp",
         "--symlink", f"/bin={busybox}/bin", str(layers)],
        capture_output=True, check=True, timeout=300)
    return json.loads(proc.stdout.splitlines()[-1])


def check_run_output(output: str, store: dict) -> None:
    """What SCRIPT prints in a container of an image of STORE."""
    lines = output.splitlines()
    want = ["Hello from a layerpipe image!", "FOO=bar", f"PATH={store['path']}", "/tmp",
            "tmp-writable", store["app_text"]]
    missing = [line for line in want if line not in lines]
    assert not missing, f"missing {missing} in the container's output:\n{output}"
