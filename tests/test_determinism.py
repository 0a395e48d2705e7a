"""Same store contents, same image bytes: the whole pipeline through real pipes,
twice, with what differs between two machines or two days changed in between:
temp dirs (and, where /dev/shm is there, the file system the store is on, so
that directories list their entries in another order), umask, the order the
store was written in, blob dirs, worker counts (and so zstd threads), working
directory."""
import contextlib
import hashlib
import io
import os
import subprocess
import tarfile
import tempfile

import pytest

from conftest import BIN
from tests.support.store import build_store

SHM = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
VARIANTS = {
    "a": {"umask": 0o022, "order": ["glibc", "libfoo", "app", "profile"], "jobs": "1", "store_on": None},
    "b": {"umask": 0o077, "order": ["profile", "app", "libfoo", "glibc"], "jobs": "2", "store_on": SHM},
}


def run_pipeline(tmp, variant: dict, compress: str, formats: list[str], app_text: str = "v1") -> dict:
    """Build the store as VARIANT says, run the four stages once into FORMATS[0],
    write the other formats from the same tarred records; the products by format
    (archives as bytes, the oci directory as a tree)."""
    tmp.mkdir()
    with contextlib.ExitStack() as cleanup:
        store_parent = str(tmp)
        if variant["store_on"]:
            store_parent = cleanup.enter_context(tempfile.TemporaryDirectory(dir=variant["store_on"]))
        return _run(tmp, store_parent, variant, compress, formats, app_text)


def _run(tmp, store_parent: str, variant: dict, compress: str, formats: list[str], app_text: str) -> dict:
    old = os.umask(variant["umask"])
    try:
        store = build_store(os.path.join(store_parent, "root"), order=variant["order"], app_text=app_text)
    finally:
        os.umask(old)
    graph = store.write_graph(str(tmp / "graph.refs"))
    out = tmp / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "XDG_CACHE_HOME")}
    tarred = tmp / "tarred.ndjson"
    assemble = [f"{BIN}/image-assemble --tag app:1 --format {fmt} -o {out}/{fmt}" for fmt in formats]
    script = (
        f"set -o pipefail; umask {variant['umask']:03o}; "
        f"{BIN}/closure-read --root {store.root} {graph}"
        f" | {BIN}/layer-split"
        f" | {BIN}/layer-tar --root {store.root} --blob-dir {tmp}/blobs -j {variant['jobs']} --compress {compress}"
        f" | tee {tarred} | {assemble[0]} >/dev/null"
        + "".join(f" && {cmd} < {tarred} >/dev/null" for cmd in assemble[1:]))
    proc = subprocess.run(["bash", "-c", script], cwd=tmp, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return {fmt: tree(out / fmt) if fmt == "oci" else (out / fmt).read_bytes() for fmt in formats}


def tree(root) -> dict[str, str]:
    """Every file and directory under ROOT: relative path -> sha256 of contents, or 'dir'."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            assert not os.path.islink(path), path
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def gzip_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gzip")
    formats = ["docker-archive", "oci-archive", "oci"]
    return {name: run_pipeline(tmp / name, variant, "gzip", formats) for name, variant in VARIANTS.items()}


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci"])
def test_gzip_images_are_identical(gzip_runs, fmt):
    assert gzip_runs["a"][fmt] == gzip_runs["b"][fmt], f"{fmt} differs between runs"


def test_the_oci_tree_is_complete(gzip_runs):
    """Not trivially equal: five layers (stable gives each of the four store
    items a layer within the budget, plus the extra files), a config and a
    manifest are there."""
    oci = gzip_runs["a"]["oci"]
    assert {"oci-layout", "index.json", "blobs", "blobs/sha256"} <= set(oci)
    assert len([p for p in oci if p.startswith("blobs/sha256/")]) == 5 + 2


def test_zstd_images_are_identical(tmp_path):
    runs = [run_pipeline(tmp_path / name, variant, "zstd", ["oci-archive"]) for name, variant in VARIANTS.items()]
    assert runs[0]["oci-archive"] == runs[1]["oci-archive"]
    assert runs[0]["oci-archive"].count(b"\x28\xb5\x2f\xfd") >= 3  # zstd frames: the layers


def test_a_new_app_build_changes_only_the_top_layers(gzip_runs, tmp_path):
    """The control (the comparisons above can fail), and the point of layering:
    a new application build leaves the base layer's bytes as they were."""
    v2 = run_pipeline(tmp_path / "v2", VARIANTS["b"], "gzip", ["docker-archive"], app_text="v2")["docker-archive"]
    v1 = gzip_runs["a"]["docker-archive"]
    assert v1 != v2

    def blobs(archive: bytes) -> set[str]:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            return {m.name for m in tar if m.name.startswith("blobs/sha256/")}
    shared = blobs(v1) & blobs(v2)
    # glibc's and libfoo's layers and the unchanged extra-files layer; the
    # application's and the profile's are new
    assert len(shared) == 3, sorted(shared)


def test_an_image_on_a_base_is_the_same_whatever_form_the_base_has(tmp_path):
    """The base as an OCI directory, as a tar of that directory and as a Docker
    archive (written by image-assemble from the same records): the same image."""
    from tests.support.images import tar_dir

    run_pipeline(tmp_path / "base", VARIANTS["a"], "gzip", ["oci", "docker-archive"])
    built = tmp_path / "base" / "out"
    tar_dir(built / "oci", tmp_path / "oci.tar")
    outputs = []
    for base in (built / "oci", tmp_path / "oci.tar", built / "docker-archive"):
        out = tmp_path / f"on-{base.name}"
        proc = subprocess.run([f"{BIN}/image-assemble", "--base", str(base), "--base-ref", "app:1", "--tag", "on:1",
                               "-o", str(out), str(tmp_path / "base" / "tarred.ndjson")],
                              capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
