"""Real consumers, all on the same image: skopeo, umoci, oci-image-tool, the
OCI JSON schemas, docker (a private dockerd) and podman load and run it.

The image holds the test store (long and non-ASCII names, symlinks, hard
links, exec bits) and the demo store (a static busybox), so it both
round-trips file by file and runs a program.
"""
import importlib.util
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import BIN, REPO
from tests.support import clients
from tests.support.store import build_store

pytestmark = pytest.mark.clients
TAG = "layerpipe-test:1"
SCRIPT = 'hello; echo "FOO=$FOO"; pwd; touch /tmp/probe && echo tmp-writable'


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo_store", REPO / "examples" / "make-demo-store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One set of layer records, assembled into every output format."""
    tmp = tmp_path_factory.mktemp("clients")
    store = build_store(str(tmp / "root"))
    demo = _demo_module().make(str(tmp / "root"), "/gnu/store", str(tmp / "demo.refs"))
    graph = tmp / "graph.refs"
    graph.write_text(store.graph_text() + (tmp / "demo.refs").read_text())
    busybox, hello_bin = demo["busybox"], demo["hello"] + "/bin"
    layers = tmp / "layers.ndjson"
    cmd = (f"{BIN}/closure-read --root {tmp}/root {graph} | {BIN}/layer-split"
           f" | {BIN}/layer-tar --root {tmp}/root --blob-dir {tmp}/blobs > {layers}")
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, timeout=300)
    outputs, images = {}, {}
    for fmt, name in (("docker-archive", "image.tar"), ("oci", "image-oci"), ("oci-archive", "image-oci.tar")):
        out = tmp / name
        proc = subprocess.run(
            [f"{BIN}/image-assemble", "--format", fmt, "-o", str(out), "--tag", TAG,
             "--entrypoint", f"{busybox}/bin/sh", "-A", "-c", "--cmd", SCRIPT,
             "--env", f"PATH={hello_bin}:{busybox}/bin", "--env", "FOO=bar", "--workdir", "/tmp",
             "--symlink", f"/bin={busybox}/bin", str(layers)],
            capture_output=True, check=True, timeout=300)
        outputs[fmt], images[fmt] = out, json.loads(proc.stdout.splitlines()[-1])
    store_paths = [r["path"] for r in map(json.loads, layers.read_text().splitlines()) if r["type"] == "path"]
    return {"tmp": tmp, "out": outputs, "image": images, "store_paths": store_paths, "root": tmp / "root"}


def _extract(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def test_same_manifest_in_every_format(built):
    digests = {fmt: img["manifest"]["digest"] for fmt, img in built["image"].items()}
    assert len(set(digests.values())) == 1, digests


@pytest.mark.parametrize("fmt,ref", [
    ("docker-archive", "docker-archive:{out}"),
    ("oci", f"oci:{{out}}:{TAG}"),
    ("oci-archive", f"oci-archive:{{out}}:{TAG}"),
])
def test_skopeo_inspect_and_copy(built, fmt, ref):
    clients.require("skopeo")
    ref = ref.format(out=built["out"][fmt])
    image = built["image"][fmt]
    config = clients.skopeo_inspect(ref, config=True)
    assert config["rootfs"]["diff_ids"] == [layer["diff_id"] for layer in image["layers"]]
    if fmt != "docker-archive":  # skopeo rebuilds a Docker schema 2 manifest from archives
        raw = clients.skopeo_inspect(ref)
        assert [layer["digest"] for layer in raw["layers"]] == [layer["digest"] for layer in image["layers"]]
    dest = built["tmp"] / f"copy-{fmt}"
    # skopeo 1.9 reads docker-archive layers uncompressed but labels them gzip;
    # letting it recompress (no --preserve-digests) gives a consistent copy.
    clients.skopeo_copy(ref, f"oci:{dest}:{TAG}", preserve_digests=fmt != "docker-archive")
    copied = json.loads((dest / "index.json").read_text())["manifests"][0]
    if fmt != "docker-archive":
        assert copied["digest"] == image["manifest"]["digest"]
    clients.validate_oci_schemas(dest)


def test_umoci_unpack_matches_store_file_by_file(built):
    clients.require("umoci")
    rootfs = clients.umoci_unpack(built["out"]["oci"], TAG, built["tmp"] / "bundle")
    compared = clients.compare_trees(built["root"], rootfs, built["store_paths"])
    assert compared > 20
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (rootfs / "bin").is_symlink()


@pytest.mark.parametrize("fmt", ["oci", "docker-archive", "oci-archive"])
def test_oci_image_tool_and_schemas(built, fmt, tmp_path):
    clients.require("oci-image-tool")
    layout = built["out"][fmt]
    if fmt != "oci":  # both archives are OCI layouts in a tar
        layout = _extract(layout, tmp_path / "layout")
    clients.oci_image_tool_validate(str(layout), TAG)
    kinds = clients.validate_oci_schemas(layout)
    assert sorted(kinds.values()).count("layer") == len(built["image"][fmt]["layers"])


def _check_run_output(output: str) -> None:
    lines = output.splitlines()
    assert "Hello from a layerpipe image!" in lines
    assert "FOO=bar" in lines and "/tmp" in lines and "tmp-writable" in lines


def test_docker_load_and_run(built, dockerd):
    assert clients.docker_load(dockerd, built["out"]["docker-archive"]) == TAG
    _check_run_output(clients.docker_run(dockerd, TAG))
    assert clients.docker_run(dockerd, TAG, "ls /bin/sh && cat /gnu/store/*-greeting-1.0/share/*").strip()


def test_docker_load_from_stdout_stream(built, dockerd):
    layers = built["tmp"] / "layers.ndjson"
    cmd = f"{BIN}/image-assemble --tag streamed:1 -o - {layers} | docker load"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=dockerd, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"streamed:1" in proc.stdout


def test_podman_load_and_run(built, podman):
    assert clients.podman_load(podman, built["out"]["docker-archive"]).endswith(TAG)
    _check_run_output(clients.podman_run(podman, TAG))


def test_podman_pull_from_oci_layout_and_run(built, podman):
    image_id = clients.podman_pull(podman, f"oci:{built['out']['oci']}:{TAG}")
    assert image_id.startswith(built["image"]["oci"]["image_id"].split(":")[1][:12])
    _check_run_output(clients.podman_run(podman, image_id))
