"""image-assemble --base: the base's layers come first, unchanged; its config
is inherited and overridden; a base that is not sound is refused with one
line, exit status 1, and nothing at the output name.  (Real clients loading
and running such images: test_base_clients.py.)"""
import gzip
import io
import json
import os
import tarfile

import pytest

from conftest import run_stage
from tests.support import images
from tests.test_errors import fails, leftovers, tarred  # noqa: F401 (a fixture)

from layerpipe import layerscan
from layerpipe.errors import LayerpipeError

ARCH = ["--arch", "amd64"]


@pytest.fixture(scope="module")
def gz(tarred):
    """Tarred gzip layer records of the test store."""
    return tarred["gzip"]


@pytest.fixture(scope="module")
def lp_bases(gz, tmp_path_factory):
    """A base made by layerpipe in each format, with a config to inherit."""
    tmp = tmp_path_factory.mktemp("lp-bases")
    opts = [*ARCH, "--tag", "base:1", "-e", "PATH=/base/bin", "-e", "BASE=1", "-l", "a=base", "-l", "b=base",
            "-w", "/srv", "--entrypoint", "/bin/sh", "-A", "-c", "--cmd", "echo base",
            # entry points must exist in the image: these stand in for a shell
            "-S", "/bin/sh=bin/app", "-S", "/bin/true=bin/app"]
    found = {}
    for fmt, name in (("docker-archive", "base.tar"), ("oci", "base-oci"), ("oci-archive", "base-oci.tar")):
        out = run_stage("image-assemble", "-f", fmt, "-o", str(tmp / name), *opts, input=gz).stdout
        found[fmt] = (tmp / name, json.loads(out.splitlines()[-1]))
    return found


def image_record(proc) -> dict:
    return json.loads(proc.stdout.splitlines()[-1])


def read_config(output, fmt: str) -> tuple[dict, dict]:
    """(manifest, config) of the one image at OUTPUT."""
    def read(name):
        if fmt == "oci":
            return (output / name).read_bytes()
        with tarfile.open(output) as tar:
            return tar.extractfile(name).read()
    index = json.loads(read("index.json"))
    manifest = json.loads(read("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    return manifest, json.loads(read("blobs/sha256/" + manifest["config"]["digest"][7:]))


@pytest.mark.parametrize("base_fmt", ["docker-archive", "oci", "oci-archive"])
@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_base_layers_first_unchanged_and_config_inherited(gz, lp_bases, tmp_path, base_fmt, fmt):
    base_path, base = lp_bases[base_fmt]
    out = tmp_path / ("img" if fmt == "oci" else "img.tar")
    image = image_record(run_stage("image-assemble", "-f", fmt, "-o", str(out), *ARCH, "--base", str(base_path),
                                   "-e", "PATH=/app/bin", "-e", "NEW=1", "-l", "b=app", "--tag", "app:1",
                                   input=gz))
    n = len(base["layers"])
    assert image["layers"][:n] == base["layers"]
    assert image["base"] == {"path": str(base_path), "image_id": base["image_id"], "layer_count": n,
                             "manifest": base["manifest"], "name": "docker.io/library/base:1"}
    manifest, config = read_config(out, fmt)
    assert [d["digest"] for d in manifest["layers"][:n]] == [d["digest"] for d in base["layers"]]
    assert manifest["annotations"] == {"org.opencontainers.image.base.name": "docker.io/library/base:1",
                                       "org.opencontainers.image.base.digest": base["manifest"]["digest"]}
    assert config["config"] == {"Env": ["PATH=/app/bin", "BASE=1", "NEW=1"], "Labels": {"a": "base", "b": "app"},
                                "WorkingDir": "/srv", "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo base"]}
    assert config["rootfs"]["diff_ids"][:n] == [d["diff_id"] for d in base["layers"]]
    _, base_config = read_config(base_path, "oci" if base_fmt == "oci" else base_fmt)
    assert config["history"][:n] == base_config["history"]
    assert len(config["history"]) == len(image["layers"])  # the base's, then one per new layer
    if fmt == "oci" and base_fmt == "oci":  # linked, not copied
        blob = base["layers"][0]["digest"][7:]
        assert os.stat(out / "blobs/sha256" / blob).st_ino == os.stat(base_path / "blobs/sha256" / blob).st_ino


def test_entrypoint_without_cmd_drops_the_base_cmd(gz, lp_bases, tmp_path):
    out = tmp_path / "img"
    run_stage("image-assemble", "-f", "oci", "-o", str(out), *ARCH, "--base", str(lp_bases["oci"][0]),
              "--entrypoint", "/bin/true", "-w", "/", input=gz)
    config = read_config(out, "oci")[1]["config"]
    assert config["Entrypoint"] == ["/bin/true"] and "Cmd" not in config and config["WorkingDir"] == "/"
    run_stage("image-assemble", "-f", "oci", "-o", str(out), *ARCH, "--base", str(lp_bases["oci"][0]),
              "--entrypoint", "/bin/true", "--cmd", "x", input=gz)
    assert read_config(out, "oci")[1]["config"]["Cmd"] == ["x"]


def test_foreign_docker_archive_and_multi_platform_index(gz, tmp_path):
    """A pre-25 docker save (layer.tar files, no digests) and an index with two platforms."""
    tars = [images.tar_bytes(("dir", "etc"), ("file", "etc/base", b"one")), images.tar_bytes(("file", "two", b"2"))]
    made = images.docker_archive(tmp_path / "old.tar", tars, tags=("old:1", "old:2"))
    image = image_record(run_stage("image-assemble", "-o", str(tmp_path / "a.tar"), *ARCH, "--base",
                                   str(tmp_path / "old.tar"), "--base-ref", "old:2", input=gz))
    assert [l["digest"] for l in image["layers"][:2]] == made["layers"]  # uncompressed: digest = diff_id
    assert image["base"]["name"] == "old:2" and "manifest" not in image["base"]
    images.oci_layout(tmp_path / "multi", tars, platforms=[("linux", "arm64"), ("linux", "amd64")])
    image = image_record(run_stage("image-assemble", "-o", str(tmp_path / "b.tar"), *ARCH, "--base",
                                   str(tmp_path / "multi"), input=gz))
    assert image["base"]["layer_count"] == 2


def test_layer_budget_counts_the_base(gz, tmp_path):
    store_layers = sum(1 for r in map(json.loads, gz.splitlines()) if r["type"] == "layer")
    tars = [images.tar_bytes(("file", f"f{i}", b"%d" % i)) for i in range(125 - store_layers)]
    images.oci_layout(tmp_path / "deep", tars)
    message = fails("image-assemble", "-o", str(tmp_path / "out.tar"), *ARCH, "--base", str(tmp_path / "deep"),
                    input=gz)
    assert message == f"{len(tars)} base layers, {store_layers} store layers and the top layer exceed 125 layers"
    images.oci_layout(tmp_path / "fits", tars[1:])
    run_stage("image-assemble", "-o", str(tmp_path / "out.tar"), *ARCH, "--base", str(tmp_path / "fits"),
              input=gz)


GOOD = [images.tar_bytes(("dir", "bin"), ("file", "bin/tool", b"#!/bin/sh\n"))]


def _flip_blob(root, digest):
    path = root / "blobs/sha256" / digest[7:]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _bad_base(tmp_path, case: str):
    """Make the base of CASE at tmp_path/base...; the path and extra options."""
    root = tmp_path / "base"
    if case == "not-an-image":
        root.mkdir()
        (root / "notes.txt").write_text("hello")
    elif case == "not-a-tar":
        root = tmp_path / "base.tar"
        root.write_text("hello" * 200)
    elif case == "compressed":
        images.oci_layout(root, GOOD)
        images.tar_dir(root, tmp_path / "b.tar")
        root = tmp_path / "base.tar.gz"
        root.write_bytes(gzip.compress((tmp_path / "b.tar").read_bytes()))
    elif case == "truncated":
        images.oci_layout(root, GOOD)
        images.tar_dir(root, tmp_path / "b.tar")
        root = tmp_path / "base.tar"
        root.write_bytes((tmp_path / "b.tar").read_bytes()[:3000])
    elif case == "index-not-json":
        images.oci_layout(root, GOOD)
        (root / "index.json").write_text("{oops")
    elif case in ("layer-digest", "config-digest"):
        made = images.oci_layout(root, GOOD)
        _flip_blob(root, made["layers"][0]["digest"] if case == "layer-digest" else made["config"]["digest"])
    elif case == "blob-outside":
        made = images.oci_layout(root, GOOD)
        blob = root / "blobs/sha256" / made["layers"][0]["digest"][7:]
        os.rename(blob, tmp_path / "outside")
        blob.symlink_to(tmp_path / "outside")
    elif case == "bad-env":
        images.oci_layout(root, GOOD, config=images.base_config([images.sha(GOOD[0])], Env="PATH=/bin"))
    elif case == "blob-missing":
        made = images.oci_layout(root, GOOD)
        (root / "blobs/sha256" / made["layers"][0]["digest"][7:]).unlink()
    elif case == "diff-id":
        images.oci_layout(root, GOOD, config=images.base_config([images.sha(b"other")]))
    elif case == "media-type":
        images.oci_layout(root, GOOD, media_type=images.LAYER_TYPES["none"])
    elif case == "foreign-layer":
        images.oci_layout(root, GOOD, media_type="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
    elif case == "no-platform":
        images.oci_layout(root, GOOD, platforms=[("linux", "arm64"), ("windows", "amd64")])
    elif case == "two-platforms":
        images.oci_layout(root, GOOD, platforms=[("linux", "amd64"), ("linux", "amd64")])
    elif case == "other-arch":
        images.oci_layout(root, GOOD, config=images.base_config([images.sha(GOOD[0])], arch="arm64"))
    elif case in ("two-images", "unknown-ref"):
        images.oci_layout(root, GOOD, names=("a:1",))
        first = json.loads((root / "index.json").read_text())
        images.oci_layout(root, GOOD + GOOD, names=("b:1",))
        second = json.loads((root / "index.json").read_text())
        (root / "index.json").write_text(json.dumps({**first, "manifests": first["manifests"] + second["manifests"]}))
        return root, (["--base-ref", "c:1"] if case == "unknown-ref" else [])
    else:
        images.oci_layout(root, [EVIL[case]])
    return root, []


EVIL = {
    "dotdot": images.tar_bytes(("file", "../evil", b"x")),
    "dotdot-inside": images.tar_bytes(("dir", "a"), ("file", "a/../../evil", b"x")),
    "absolute": images.tar_bytes(("file", "/etc/evil", b"x")),
    "hardlink-out": images.tar_bytes(("link", "passwd", "../../etc/passwd")),
    "through-symlink": images.tar_bytes(("sym", "lib", "/etc"), ("file", "lib/passwd", b"x")),
    "trailing-data": images.tar_bytes(("file", "ok", b"x")) + b"\0" * 512 + images.tar_bytes(("file", "../evil", b"x")),
}
REFUSED = {
    "not-an-image": "neither an OCI layout nor a Docker archive",
    "not-a-tar": "neither a directory nor a tar archive",
    "compressed": "a compressed archive: decompress it first",
    "truncated": "damaged tar archive",
    "index-not-json": "index index.json is not JSON",
    "layer-digest": "blob does not match its digest (it is sha256:",
    "config-digest": "does not match its digest",
    "blob-missing": "no file 'blobs/sha256/",
    "blob-outside": "no file 'blobs/sha256/",  # a link out of the layout is not followed
    "bad-env": "its config's Env is not a list of strings",
    "diff-id": "uncompressed tar is sha256:",
    "media-type": "but the blob is gzip-compressed",
    "foreign-layer": "unsupported layer media type",
    "no-platform": "a multi-platform index with no image for linux/amd64 (it has linux/arm64, windows/amd64)",
    "two-platforms": "a multi-platform index with 2 images for linux/amd64",
    "other-arch": "it is for 'arm64', this image for 'amd64' (see --arch)",
    "two-images": "it holds 2 images (a:1, b:1); choose one by name",
    "unknown-ref": "no image named 'c:1' in it (names: a:1, b:1)",
    "dotdot": "entry '../evil' leaves the image root",
    "dotdot-inside": "entry 'a/../../evil' leaves the image root",
    "absolute": "entry '/etc/evil' leaves the image root",
    "hardlink-out": "hard link 'passwd' points outside the image root ('../../etc/passwd')",
    "through-symlink": "entry 'lib/passwd' goes through the symbolic link 'lib' of the same layer",
    "trailing-data": "data after the end of the tar archive",
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsound_base_is_refused(gz, tmp_path, case):
    base, extra = _bad_base(tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    message = fails("image-assemble", "-o", str(out / "img.tar"), *ARCH, "--base", str(base), *extra, input=gz)
    assert message.startswith(f"base {base}: "), message
    assert REFUSED[case] in message, message
    assert leftovers(out) == []


def test_refused_base_leaves_an_oci_layout_as_it_was(gz, tmp_path):
    target = tmp_path / "img"
    run_stage("image-assemble", "-f", "oci", "-o", str(target), *ARCH, "--tag", "first:1", input=gz)
    before = sorted((p.relative_to(target), p.stat().st_ino) for p in target.rglob("*"))
    base, _ = _bad_base(tmp_path, "dotdot")
    fails("image-assemble", "-f", "oci", "-o", str(target), *ARCH, "--base", str(base), input=gz)
    assert sorted((p.relative_to(target), p.stat().st_ino) for p in target.rglob("*")) == before
    assert leftovers(tmp_path) == ["base", "img"]


def test_base_usage_errors(gz, tmp_path):
    message = fails("image-assemble", "-o", str(tmp_path / "i.tar"), "--base-ref", "x", input=gz, status=2)
    assert message == "--base-ref needs --base"
    images.oci_layout(tmp_path / "z", GOOD, how="zstd")
    message = fails("image-assemble", "-o", str(tmp_path / "i.tar"), *ARCH, "--base", str(tmp_path / "z"),
                    input=gz, status=2)
    assert message == "docker-archive cannot carry zstd layers; use --format oci or oci-archive"
    image = image_record(run_stage("image-assemble", "-f", "oci-archive", "-o", str(tmp_path / "i.tar"), *ARCH,
                                   "--base", str(tmp_path / "z"), input=gz))
    assert image["layers"][0]["mediaType"] == images.LAYER_TYPES["zstd"]
    assert leftovers(tmp_path) == ["i.tar", "z"]


# -- the layer scanner's limits, lowered so that small inputs reach them --------

def _scan(data: bytes):
    return layerscan.scan_layer(io.BytesIO(data), len(data), "here")


def test_scan_gives_digest_diff_id_and_compression():
    tar = images.tar_bytes(("file", "a", b"x" * 1000))
    blob = gzip.compress(tar)
    scanned = _scan(blob)
    assert (scanned.digest, scanned.diff_id, scanned.compression, scanned.size) == \
        (images.sha(blob), images.sha(tar), "gzip", len(blob))


def test_scan_limits(monkeypatch):
    monkeypatch.setattr(layerscan, "MAX_ENTRIES", 3)
    with pytest.raises(LayerpipeError, match="more than 3 entries"):
        _scan(images.tar_bytes(*[("file", f"f{i}", b"") for i in range(4)]))
    monkeypatch.setattr(layerscan, "BOMB_FLOOR", 1 << 16)
    with pytest.raises(LayerpipeError, match="a decompression bomb"):
        _scan(gzip.compress(images.tar_bytes(("file", "zeros", b"\0" * (1 << 20)))))
    monkeypatch.setattr(layerscan, "MAX_HEADER", 1 << 12)
    with pytest.raises(LayerpipeError, match="a tar header larger than"):
        _scan(images.tar_bytes(("file", "n" * 5000, b"")))
