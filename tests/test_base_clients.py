"""Base images and several names, checked by real clients: bases made by
buildah (from scratch, with a static busybox) and by skopeo (a layerpipe
image converted), images on them loaded and run by podman and docker; a
Docker archive with several tags; one OCI layout holding two images that
share their blobs, read by skopeo, umoci, oci-image-tool and podman."""
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import BIN, run_stage
from tests.support import clients
from tests.support.runnable import demo_module

pytestmark = pytest.mark.clients
RUN = 'hello; echo "FOO=$FOO BASE=$BASE"; pwd; touch /tmp/probe && echo tmp-writable'


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo store (busybox, hello) as tarred layer records."""
    tmp = tmp_path_factory.mktemp("demo")
    paths = demo_module().make(str(tmp / "root"), "/gnu/store", str(tmp / "demo.refs"))
    layers = tmp / "layers.ndjson"
    cmd = (f"{BIN}/closure-read --root {tmp}/root {tmp}/demo.refs | {BIN}/layer-split"
           f" | {BIN}/layer-tar --root {tmp}/root --blob-dir {tmp}/blobs > {layers}")
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, timeout=300)
    return {"tmp": tmp, "layers": layers, **paths}


def assemble(layers, out, *args: str, fmt: str = "docker-archive") -> dict:
    proc = run_stage("image-assemble", "-f", fmt, "-o", str(out), *args, str(layers))
    return json.loads(proc.stdout.splitlines()[-1])


def oci_manifest(layout_tar, ref: str | None = None) -> tuple[dict, dict]:
    """(manifest, config) of the image in an OCI archive (by ref name, or the first)."""
    with tarfile.open(layout_tar) as tar:
        def read(name):
            return json.loads(tar.extractfile(name).read())
        index = read("index.json")["manifests"]
        desc = next(d for d in index if ref is None or d["annotations"]["org.opencontainers.image.ref.name"] == ref)
        manifest = read("blobs/sha256/" + desc["digest"][7:])
        return manifest, read("blobs/sha256/" + manifest["config"]["digest"][7:])


@pytest.fixture(scope="module")
def buildah_base(podman, tmp_path_factory):
    """A base made by buildah from scratch: busybox in /bin, a config to inherit."""
    clients.require("buildah")
    tmp = tmp_path_factory.mktemp("buildah")
    rootfs = tmp / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "srv").mkdir()
    shutil.copyfile(demo_module().BUSYBOX, rootfs / "bin" / "busybox")
    os.chmod(rootfs / "bin" / "busybox", 0o755)
    for applet in ("sh", "echo", "pwd", "touch", "cat", "ls", "wc"):
        os.symlink("busybox", rootfs / "bin" / applet)
    dests = {"oci-archive": tmp / "base-oci.tar", "docker-archive": tmp / "base-docker.tar"}
    clients.buildah_scratch(podman, rootfs, [f"oci-archive:{dests['oci-archive']}:base:1",
                                             f"docker-archive:{dests['docker-archive']}:base:1"],
                            "--env", "PATH=/bin", "--env", "BASE=1", "--workingdir", "/srv",
                            "--label", "base=yes", "--label", "who=base", "--entrypoint", '["/bin/sh", "-c"]',
                            "--cmd", '["echo \\"base cmd in $(pwd) BASE=$BASE\\""]')
    return dests


def _check_run(env, image: str, run) -> None:
    assert run(env, image).strip() == "base cmd in /srv BASE=1"  # the base's Entrypoint, Cmd, WorkingDir, Env
    lines = run(env, image, RUN).splitlines()
    assert "Hello from a layerpipe image!" in lines and "FOO=bar BASE=1" in lines
    assert "/srv" in lines and "tmp-writable" in lines


@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive"])
def test_image_on_a_buildah_base_loads_and_runs_in_podman(demo, buildah_base, podman, kind, tmp_path):
    base = buildah_base[kind]
    tag = f"on-buildah-{kind}:1"
    image = assemble(demo["layers"], tmp_path / "img.tar", "--base", str(base), "--tag", tag,
                     "-e", f"PATH=/bin:{demo['profile']}/bin", "-e", "FOO=bar", "-l", "who=app")
    if kind == "oci-archive":
        base_manifest, base_config = oci_manifest(base)
        base_digests = [d["digest"] for d in base_manifest["layers"]]
    else:
        base_config = clients.skopeo_inspect(f"docker-archive:{base}", config=True)
        base_digests = base_config["rootfs"]["diff_ids"]  # docker save layers: uncompressed tars
    n = len(base_digests)
    assert [l["digest"] for l in image["layers"][:n]] == base_digests
    config = clients.skopeo_inspect(f"oci-archive:{tmp_path / 'img.tar'}:{tag}", config=True)
    assert config["rootfs"]["diff_ids"][:n] == base_config["rootfs"]["diff_ids"]
    assert config["config"]["Labels"]["base"] == "yes" and config["config"]["Labels"]["who"] == "app"
    assert config["history"][:len(base_config["history"])] == base_config["history"]
    raw = clients.skopeo_inspect(f"oci-archive:{tmp_path / 'img.tar'}:{tag}")
    assert [d["digest"] for d in raw["layers"][:n]] == base_digests
    assert clients.podman_load(podman, tmp_path / "img.tar").endswith(tag)
    _check_run(podman, tag, clients.podman_run)


def test_image_on_a_buildah_base_loads_and_runs_in_docker(demo, buildah_base, dockerd, tmp_path):
    assemble(demo["layers"], tmp_path / "img.tar", "--base", str(buildah_base["oci-archive"]),
             "--tag", "docker-on-buildah:1", "-e", f"PATH=/bin:{demo['profile']}/bin", "-e", "FOO=bar")
    assert clients.docker_load(dockerd, tmp_path / "img.tar") == "docker-on-buildah:1"
    _check_run(dockerd, "docker-on-buildah:1", clients.docker_run)


def test_image_on_a_skopeo_converted_layerpipe_base(demo, podman, tmp_path):
    """layerpipe's image, rewritten by skopeo as a Docker archive (manifest.json,
    uncompressed layers) or into a layout with Docker's manifest and media
    types, is a base too."""
    bb = demo["busybox"]
    assemble(demo["layers"], tmp_path / "lp", "--tag", "lp-base:1", "--symlink", f"/bin={bb}/bin",
             "-e", "PATH=/bin", "-e", "BASE=1", "-w", "/srv", "--entrypoint", "/bin/sh", "-A", "-c",
             "--cmd", 'echo "base cmd in $(pwd) BASE=$BASE"', fmt="oci")
    clients.skopeo_copy(f"oci:{tmp_path / 'lp'}:lp-base:1", f"docker-archive:{tmp_path / 'skopeo.tar'}:lp-base:1")
    # Docker's manifest and media types inside an OCI layout
    clients.run_client(["skopeo", "--insecure-policy", "copy", "--quiet", "--format", "v2s2",
                        f"oci:{tmp_path / 'lp'}:lp-base:1", f"oci:{tmp_path / 'skopeo-v2s2'}:copied"])
    base_config = clients.skopeo_inspect(f"docker-archive:{tmp_path / 'skopeo.tar'}", config=True)
    for base in (tmp_path / "skopeo.tar", tmp_path / "skopeo-v2s2"):
        name = f"on-{base.name.replace('.', '-')}"
        tag, out = f"{name}:1", tmp_path / f"{name}.tar"
        image = assemble(demo["layers"], out, "--base", str(base), "--tag", tag,
                         "-e", f"PATH=/bin:{demo['profile']}/bin", "-e", "FOO=bar")
        n = image["base"]["layer_count"]
        assert [l["diff_id"] for l in image["layers"][:n]] == base_config["rootfs"]["diff_ids"]
        if base.name == "skopeo-v2s2":
            desc = json.loads((base / "index.json").read_text())["manifests"][0]  # skopeo 1.9 cannot read it back
            raw = json.loads((base / "blobs" / "sha256" / desc["digest"][7:]).read_text())
            assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
            assert [l["digest"] for l in image["layers"][:n]] == [l["digest"] for l in raw["layers"]]
            assert {l["mediaType"] for l in image["layers"][:n]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
        assert clients.podman_load(podman, out).endswith(tag)
        _check_run(podman, tag, clients.podman_run)


def test_docker_archive_with_several_tags(demo, podman, dockerd, tmp_path):
    tags = ["multi:1", "multi:2", "registry.example.com:5000/team/multi:3"]
    image = assemble(demo["layers"], tmp_path / "img.tar", *[a for t in tags for a in ("--tag", t)], "--tag", "multi:1",
                     "--entrypoint", f"{demo['profile']}/bin/hello")
    assert image["tags"] == tags
    with tarfile.open(tmp_path / "img.tar") as tar:
        assert json.loads(tar.extractfile("manifest.json").read())[0]["RepoTags"] == tags
    out = clients.run_client(["docker", "load", "-i", tmp_path / "img.tar"], env=dockerd).stdout
    assert [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Loaded image")] == tags
    for tag in tags:
        assert "Hello from a layerpipe image!" in clients.docker_run(dockerd, tag)
    out = clients.run_client(["podman", "load", *clients._policy(podman), "-i", tmp_path / "img.tar"], env=podman).stdout
    assert all(tag in out for tag in tags), out
    assert "Hello from a layerpipe image!" in clients.podman_run(podman, "multi:2")


def test_one_oci_layout_holds_two_images_sharing_blobs(demo, buildah_base, podman, tmp_path):
    layout = tmp_path / "images"
    env = ["-e", f"PATH=/bin:{demo['profile']}/bin", "-e", "FOO=bar"]
    web = assemble(demo["layers"], layout, "--tag", "web:1", "--symlink", f"/bin={demo['busybox']}/bin",
                   "--entrypoint", "/bin/sh", "-A", "-c", "--cmd", "hello", *env, fmt="oci")
    app = assemble(demo["layers"], layout, "--tag", "app:1", "--base", str(buildah_base["oci-archive"]), *env,
                   fmt="oci")
    blobs = set(os.listdir(layout / "blobs" / "sha256"))
    wanted = {d["digest"][7:] for img in (web, app) for d in (*img["layers"], img["config"], img["manifest"])}
    assert blobs == wanted  # the shared store layers are there once
    clients.oci_image_tool_validate(str(layout))
    kinds = clients.validate_oci_schemas(layout)
    assert sorted(kinds.values()).count("manifest") == 2
    for tag, image in (("web:1", web), ("app:1", app)):
        assert clients.skopeo_inspect(f"oci:{layout}:{tag}")["config"]["digest"] == image["image_id"]
        rootfs = clients.umoci_unpack(layout, tag, tmp_path / f"bundle-{tag}")
        assert (rootfs / demo["hello"].lstrip("/") / "bin" / "hello").is_file()
        image_id = clients.podman_pull(podman, f"oci:{layout}:{tag}")
        assert "Hello from a layerpipe image!" in clients.podman_run(podman, image_id, *(["hello"] if tag == "app:1" else []))
    assert (tmp_path / "images" / "blobs" / "sha256" / app["layers"][0]["digest"][7:]).is_file()


def test_image_on_a_docker_save_base(demo, buildah_base, dockerd, tmp_path):
    """What `docker save` writes (here Docker 20.10: <id>/layer.tar, no index.json) is a base."""
    loaded = clients.docker_load(dockerd, buildah_base["docker-archive"])
    clients.run_client(["docker", "save", "-o", tmp_path / "saved.tar", loaded], env=dockerd)
    image = assemble(demo["layers"], tmp_path / "img.tar", "--base", str(tmp_path / "saved.tar"),
                     "--tag", "on-docker-save:1", "-e", f"PATH=/bin:{demo['profile']}/bin", "-e", "FOO=bar")
    assert "manifest" not in image["base"] and image["base"]["name"] == loaded
    assert clients.docker_load(dockerd, tmp_path / "img.tar") == "on-docker-save:1"
    _check_run(dockerd, "on-docker-save:1", clients.docker_run)
