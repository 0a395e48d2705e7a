"""layer-tar --relocate FROM=TO: member names move, link targets do not; bad
or colliding mappings are refused before anything is written; the mapping is
part of the cache key."""
import gzip
import io
import json
import os
import subprocess
import tarfile

import pytest

from conftest import BIN, run_stage
from tests.test_errors import fails

from layerpipe.errors import LayerpipeError, UsageError
from layerpipe.relocate import Relocation


@pytest.fixture
def split(store, tmp_path):
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    return run_stage("layer-split", input=run_stage("closure-read", "--root", store.root, graph).stdout).stdout


def _tar(store, split, blobs, *args) -> list[dict]:
    out = run_stage("layer-tar", "--root", store.root, "--blob-dir", str(blobs), *args, input=split).stdout
    return [json.loads(l) for l in out.splitlines() if b'"type":"layer"' in l]


def _members(layer: dict) -> dict[str, str]:
    with open(layer["blob"], "rb") as f:
        data = gzip.decompress(f.read())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m.linkname for m in tar}


def test_member_names_move_link_targets_do_not(store, split, tmp_path):
    layers = _tar(store, split, tmp_path / "b", "--relocate", "/gnu/store=/opt/store")
    members = {k: v for layer in layers for k, v in _members(layer).items()}
    assert all(name == "opt" or name.startswith("opt/") for name in members), sorted(members)[:5]
    libfoo, glibc = store.paths["libfoo"], store.paths["glibc"]
    assert members["opt/store/" + libfoo.rsplit("/", 1)[1] + "/lib/libc-link"] == f"{glibc}/lib/libc.so.6"
    assert [l["paths"] for l in layers] == [l["paths"] for l in _tar(store, split, tmp_path / "c")]


def test_relocation_is_in_the_cache_key(store, split, tmp_path):
    plain = _tar(store, split, tmp_path / "b")
    moved = _tar(store, split, tmp_path / "b", "--relocate", "/gnu/store=/opt/store")
    again = _tar(store, split, tmp_path / "b", "--relocate", "/gnu/store=/opt/store")
    other = _tar(store, split, tmp_path / "b", "--relocate", "/gnu/store=/srv/store")
    assert {l["digest"] for l in plain}.isdisjoint(l["digest"] for l in moved)
    assert [l["digest"] for l in moved] == [l["digest"] for l in again]
    assert {l["digest"] for l in moved}.isdisjoint(l["digest"] for l in other)


def test_image_with_a_link_back_runs_the_relative_entrypoint(store, split, tmp_path):
    layers = run_stage("layer-tar", "--root", store.root, "--blob-dir", str(tmp_path / "b"),
                       "--relocate", "/gnu/store=/opt/store", input=split).stdout
    # links in the store still point into /gnu/store: the image provides it as a link
    run_stage("image-assemble", "-o", str(tmp_path / "ok.tar"), "-S", "/gnu/store=/opt/store",
              "--entrypoint", "bin/app", input=layers)
    message = fails("image-assemble", "-o", str(tmp_path / "no.tar"), "--entrypoint", "bin/app",
                    input=layers, status=2)
    assert "is not in the image" in message


@pytest.mark.parametrize("spec, what", [
    ("/gnu/store", "expected FROM=TO"),
    ("gnu/store=/opt", "absolute, normal"),
    ("/gnu/store=/opt/../etc", "absolute, normal"),
    ("/gnu/store=/", "absolute, normal"),
    ("/gnu/store/=/opt", "absolute, normal"),
    ("/gnu/store=/gnu/store", "to itself"),
    ("/gnu/store=/gnu/store/sub", "inside /gnu/store"),
])
def test_bad_mappings_are_usage_errors(store, split, tmp_path, spec, what):
    message = fails("layer-tar", "--root", store.root, "--blob-dir", str(tmp_path / "b"), "--relocate", spec,
                    input=split, status=2)
    assert what in message and not (tmp_path / "b").exists()


def test_overlapping_mappings():
    with pytest.raises(UsageError, match="overlap"):
        Relocation.parse(["/gnu/store=/opt/a", "/gnu=/opt/b"])
    with pytest.raises(UsageError, match="could collide"):
        Relocation.parse(["/gnu/store=/opt/s", "/nix/store=/opt/s/x"])


def test_collisions_over_the_closure_are_refused(store, split, tmp_path):
    a, b = "/gnu/store/" + "a" * 32 + "-x", "/nix/store/" + "a" * 32 + "-x"
    with pytest.raises(LayerpipeError, match="where /gnu/store/a+-x goes"):
        Relocation.parse(["/gnu/store=/nix/store"]).check([a, b])
    with pytest.raises(LayerpipeError, match="inside"):
        Relocation.parse(["/nix/store=/gnu/store/" + "a" * 32 + "-x"]).check([a, b])
    Relocation.parse(["/gnu/store=/opt/store"]).check([a, b])
    twin = store.paths["app"].replace("/gnu/", "/nix/")  # the same name in another store
    os.makedirs(store.fs(twin))
    last = json.loads(split.splitlines()[-1])
    other = {**last, "index": last["index"] + 1, "paths": [twin]}
    message = fails("layer-tar", "--root", store.root, "--blob-dir", str(tmp_path / "b"),
                    "--relocate", "/gnu/store=/nix/store", input=split + json.dumps(other).encode() + b"\n")
    assert message == f"--relocate puts {store.paths['app']} at {twin}, where {twin} goes" or \
        message == f"--relocate puts {twin} at {twin}, where {store.paths['app']} goes"


@pytest.mark.nix
@pytest.mark.clients
def test_relocated_nix_closure_runs_in_podman(nix_closure, podman, tmp_path):
    """The store items under /opt/store, /nix/store a link to it: the scripts'
    #! lines and the links between items (all /nix/store/...) still work."""
    from tests.support.clients import podman_load, podman_run
    out = tmp_path / "hello.tar"
    cmd = (f"{BIN}/closure-read | {BIN}/layer-split"
           f" | {BIN}/layer-tar --root {nix_closure.fs_root} --blob-dir {tmp_path}/blobs"
           f"   --relocate {nix_closure.store_dir}=/opt/store"
           f" | {BIN}/image-assemble --tag nix-hello:moved -S {nix_closure.store_dir}=/opt/store"
           f"   --entrypoint bin/hello -o {out}")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], input=nix_closure.path_info_json.encode(),
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    names = set()
    with tarfile.open(out) as image:
        for layer in json.load(image.extractfile("manifest.json"))[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.extractfile(layer).read()))) as tar:
                names.update(m.name for m in tar)
    store = nix_closure.store_dir.lstrip("/")
    assert [n for n in names if n.startswith(store)] == [store]  # the link; the items are under opt/store
    assert "opt/store/" + nix_closure.path.rsplit("/", 1)[1] in names
    assert "hello from lib" in podman_run(podman, podman_load(podman, out))
