"""Real producers: closures built offline by nix-bin, fed to closure-read in
every form Nix writes them, then built into an image that runs."""
import json
import subprocess

import pytest

from conftest import BIN, run_stage
from layerpipe.graph_formats import normalise_nar_hash

pytestmark = pytest.mark.nix


def _records(proc) -> dict:
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert lines[0]["type"] == "header" and lines[0]["stages"] == ["closure-read"]
    return {r["path"]: r for r in lines[1:]}


def _path_info(nix_closure) -> dict:
    return {e["path"]: e for e in json.loads(nix_closure.path_info_json)}


def _check_against_nix(records: dict, nix_closure) -> None:
    info = _path_info(nix_closure)
    assert sorted(records) == sorted(nix_closure.paths)
    for path, refs in nix_closure.references:
        assert records[path]["references"] == sorted(refs), path
        assert records[path]["narSize"] == info[path]["narSize"], path
    assert [p for p, r in records.items() if r["root"]] == [nix_closure.path]


def test_path_info_json(nix_closure):
    proc = run_stage("closure-read", input=nix_closure.path_info_json.encode())
    records = _records(proc)
    _check_against_nix(records, nix_closure)
    for path, entry in _path_info(nix_closure).items():
        assert records[path]["narHash"] == normalise_nar_hash(entry["narHash"])
        assert records[path]["narHash"].startswith("sha256:") and len(records[path]["narHash"]) == 71


def test_export_references_graph_text_computes_nar_size_from_disk(nix_closure):
    """The text format has no sizes: closure-read computes them, and must agree with Nix."""
    proc = run_stage("closure-read", "--root", nix_closure.fs_root, input=nix_closure.graph_text.encode())
    _check_against_nix(_records(proc), nix_closure)


def test_structured_attrs_json(nix_closure):
    proc = run_stage("closure-read", input=nix_closure.attrs_json.encode())
    records = _records(proc)
    _check_against_nix(records, nix_closure)
    info = _path_info(nix_closure)
    assert all(records[p]["narHash"] == normalise_nar_hash(info[p]["narHash"]) for p in records)


def test_object_keyed_path_info(nix_closure):
    """Nix >= 2.19 prints an object keyed by store path: same records."""
    keyed = {e.pop("path"): e for e in json.loads(nix_closure.path_info_json)}
    proc = run_stage("closure-read", input=json.dumps(keyed).encode())
    _check_against_nix(_records(proc), nix_closure)


def test_nix_closure_image_runs_in_podman(nix_closure, podman, tmp_path):
    from tests.support.clients import podman_load, podman_run
    out = tmp_path / "hello.tar"
    cmd = (f"{BIN}/closure-read | {BIN}/layer-split"
           f" | {BIN}/layer-tar --root {nix_closure.fs_root} --blob-dir {tmp_path}/blobs"
           f" | {BIN}/image-assemble --tag nix-hello:1 --entrypoint bin/hello -o {out}")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], input=nix_closure.path_info_json.encode(),
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    image = podman_load(podman, out)
    assert "hello from lib" in podman_run(podman, image)
