"""Real consumers, all on the same image: skopeo, umoci, oci-image-tool, the
OCI JSON schemas, docker (a private dockerd), podman and containerd load and
run it; containerd runs its zstd variant too.

The image holds the test store (long and non-ASCII names, symlinks, hard
links, exec bits) and the demo store (a static busybox), so it both
round-trips file by file and runs a program (tests/support/runnable.py).
"""
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import BIN
from tests.support import clients, containerd, runnable

pytestmark = pytest.mark.clients
TAG = "layerpipe-test:1"
ZSTD_TAG = "layerpipe-test:zstd"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One set of layer records, assembled into every output format, gzip and zstd."""
    tmp = tmp_path_factory.mktemp("clients")
    store = runnable.make_store(tmp)
    outputs, records = {}, {}
    for compress, tag, formats in (("gzip", TAG, ("docker-archive", "oci", "oci-archive")),
                                   ("zstd", ZSTD_TAG, ("oci", "oci-archive"))):
        layers = runnable.tar_layers(store, tmp / f"layers-{compress}.ndjson", blob_dir=tmp / "blobs",
                                   compress=compress)
        for fmt in formats:
            key = fmt if compress == "gzip" else f"{fmt}+zstd"
            outputs[key] = tmp / key.replace("+", "-")
            records[key] = runnable.assemble(store, layers, fmt, outputs[key], tag)
    store_paths = [r["path"] for r in map(json.loads, (tmp / "layers-gzip.ndjson").read_text().splitlines())
                   if r["type"] == "path"]
    return {"tmp": tmp, "out": outputs, "image": records, "store_paths": store_paths,
            "root": store["root"], "store": store}


def _extract(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def test_same_manifest_in_every_format(built):
    for compress in ("gzip", "zstd"):
        digests = {fmt: img["manifest"]["digest"] for fmt, img in built["image"].items()
                   if fmt.endswith("+zstd") == (compress == "zstd")}
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


# Each engine with every output it can take: docker loads only archives with manifest.json,
# ctr imports tars (an OCI layout directory is the same as oci-archive, tarred).
RUNS = [("docker", "docker-archive"), ("podman", "docker-archive"), ("podman", "oci"),
        ("podman", "oci-archive"), ("ctr", "docker-archive"), ("ctr", "oci-archive"),
        ("ctr", "oci-archive+zstd"), ("podman", "oci+zstd")]
ENGINES = {"docker": ("dockerd", clients.docker_load, clients.docker_run),
           "podman": ("podman", clients.podman_load, clients.podman_run),
           "ctr": ("containerd", containerd.ctr_import, containerd.ctr_run)}


@pytest.mark.parametrize("engine, fmt", RUNS)
def test_runs_the_entrypoint(built, request, engine, fmt):
    fixture, load, run = ENGINES[engine]
    env = request.getfixturevalue(fixture)
    out = built["out"][fmt]
    if out.is_dir():  # podman reads a layout directory as a pull source, not an archive
        image = clients.podman_pull(env, f"oci:{out}:{ZSTD_TAG if fmt.endswith('+zstd') else TAG}")
        assert image.startswith(built["image"][fmt]["image_id"].split(":")[1][:12])
    else:
        image = load(env, out)
    runnable.check_run_output(run(env, image), built["store"])


def test_docker_load_from_stdout_stream(built, dockerd):
    layers = built["tmp"] / "layers-gzip.ndjson"
    cmd = f"{BIN}/image-assemble --tag streamed:1 -o - {layers} | docker load"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], env=dockerd, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"streamed:1" in proc.stdout
