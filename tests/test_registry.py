"""Images through a real registry (docker-registry 2.8 on 127.0.0.1): pushed with
`skopeo copy --preserve-digests`, served with the digests layerpipe computed, pulled
back by skopeo, podman, docker and containerd (zstd layers too) and run; and an
application-only update, whose push the registry's access log shows uploading
only the new layers.

The images are those of tests/support/runnable.py: v1, then v2 in which only the
test store's application changed (its profile changes with it, as input
addressing makes it), built with `--strategy stable --previous` v1 as a user
would build an update.
"""
import hashlib
import json

import pytest

from tests.support import clients, runnable
from tests.support import containerd as ctr

pytestmark = pytest.mark.clients


@pytest.fixture(scope="module")
def update(tmp_path_factory):
    """v1 as an OCI layout, a Docker archive and an OCI layout with zstd layers, v2 as an OCI
    layout: for each version its store, and per output its path and image record."""
    tmp = tmp_path_factory.mktemp("registry")
    out = {}
    for version, formats in (("v1", ("oci", "docker-archive")), ("v2", ("oci",))):
        store = runnable.make_store(tmp / version, app_text=version)
        previous = f"--previous {out['v1']['path']['oci']}" if version == "v2" else ""
        layers = runnable.tar_layers(store, tmp / version / "layers.ndjson", blob_dir=tmp / "blobs",
                                   split=f"--strategy stable {previous}")
        out[version] = {"store": store, "path": {}, "image": {}}
        for fmt in formats:
            path = out[version]["path"][fmt] = tmp / version / fmt
            out[version]["image"][fmt] = runnable.assemble(store, layers, fmt, path, f"app:{version}")
    v1 = out["v1"]
    layers = runnable.tar_layers(v1["store"], tmp / "v1" / "layers-zstd.ndjson", blob_dir=tmp / "blobs",
                               compress="zstd", split="--strategy stable")
    path = v1["path"]["oci+zstd"] = tmp / "v1" / "oci-zstd"
    v1["image"]["oci+zstd"] = runnable.assemble(v1["store"], layers, "oci", path, "app:v1")
    return out


def push(registry, source: str, repo: str, tag: str):
    """skopeo copy SOURCE to REPO:TAG in REGISTRY; what the access log shows of the push."""
    mark = registry.mark()
    clients.skopeo_copy(source, registry.ref(repo, tag))
    return registry.push_since(mark, repo, tag)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_served(registry, repo: str, tag: str, image: dict) -> None:
    """The registry serves IMAGE's manifest under its digest, and each blob of it as computed."""
    headers, body = registry.manifest(repo, tag)
    assert sha256(body) == headers["Docker-Content-Digest"] == image["manifest"]["digest"]
    assert len(body) == image["manifest"]["size"]
    manifest = json.loads(body)
    assert manifest["config"] == image["config"]
    assert manifest["layers"] == [{k: v for k, v in layer.items() if k != "diff_id"}
                                  for layer in image["layers"]]
    for desc in [image["config"], *image["layers"]]:
        blob = registry.blob(repo, desc["digest"])
        assert (sha256(blob), len(blob)) == (desc["digest"], desc["size"])


@pytest.fixture(scope="module")
def pushed(registry, update):
    """v1 pushed from its OCI layout to <registry>/layerpipe/app:v1."""
    push(registry, f"oci:{update['v1']['path']['oci']}:app:v1", "layerpipe/app", "v1")
    return f"{registry.host}/layerpipe/app:v1"


def test_registry_serves_the_digests_layerpipe_computed(registry, update, pushed):
    assert_served(registry, "layerpipe/app", "v1", update["v1"]["image"]["oci"])


def test_docker_archive_pushed_as_the_oci_layout_it_also_is(registry, update):
    # The Docker archive is an OCI layout in a tar too: skopeo's oci-archive transport
    # sends its blobs as they are, so the registry gets the very same image.
    image = update["v1"]["image"]["docker-archive"]
    assert image["manifest"] == update["v1"]["image"]["oci"]["manifest"]
    push(registry, f"oci-archive:{update['v1']['path']['docker-archive']}:app:v1", "layerpipe/archive", "v1")
    assert_served(registry, "layerpipe/archive", "v1", image)


def test_docker_archive_transport_uploads_uncompressed_layers(registry, update, dockerd):
    """skopeo 1.9's docker-archive transport reads each layer decompressed and, with
    --preserve-digests, uploads it so, still labelled tar+gzip: the image keeps its config
    (the same image ID, and docker pulls and runs it) but ships the uncompressed bytes. The
    README therefore pushes archives with the oci-archive transport. Should this fail, skopeo
    has changed: see whether docker-archive: now keeps layerpipe's digests."""
    image = update["v1"]["image"]["docker-archive"]
    pushed = push(registry, f"docker-archive:{update['v1']['path']['docker-archive']}", "layerpipe/docker", "v1")
    _, body = registry.manifest("layerpipe/docker", "v1")
    manifest = json.loads(body)
    assert manifest["config"]["digest"] == image["config"]["digest"]
    assert [layer["digest"] for layer in manifest["layers"]] == [layer["diff_id"] for layer in image["layers"]]
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    uploaded = {layer["digest"]: layer["size"] for layer in manifest["layers"]}
    assert {d: pushed.uploaded[d] for d in uploaded} == uploaded  # the registry got these bytes
    assert sum(uploaded.values()) > sum(layer["size"] for layer in image["layers"])
    name = f"{registry.host}/layerpipe/docker:v1"
    clients.run_client(["docker", "pull", "--quiet", name], env=dockerd)
    runnable.check_run_output(clients.docker_run(dockerd, name), update["v1"]["store"])


def test_docker_push_recompresses(registry, update, dockerd):
    """What the README says of `docker load` + `docker push`: the same image (config), but
    layers gzipped again by dockerd, so other digests than layerpipe's."""
    image = update["v1"]["image"]["docker-archive"]
    loaded = clients.docker_load(dockerd, update["v1"]["path"]["docker-archive"])
    name = f"{registry.host}/layerpipe/docker-push:v1"
    clients.run_client(["docker", "tag", loaded, name], env=dockerd)
    clients.run_client(["docker", "push", name], env=dockerd)
    manifest = json.loads(registry.manifest("layerpipe/docker-push", "v1")[1])
    assert manifest["config"]["digest"] == image["config"]["digest"]
    assert not {layer["digest"] for layer in manifest["layers"]} & {layer["digest"] for layer in image["layers"]}


def test_skopeo_pulls_the_same_image_back(update, pushed, tmp_path):
    clients.skopeo_copy(f"docker://{pushed}", f"oci:{tmp_path / 'pulled'}:app:v1")
    index = json.loads((tmp_path / "pulled" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == update["v1"]["image"]["oci"]["manifest"]["digest"]
    kinds = clients.validate_oci_schemas(tmp_path / "pulled")  # blob digests, sizes, diff_ids
    assert list(kinds.values()).count("layer") == len(update["v1"]["image"]["oci"]["layers"])


def test_podman_pulls_and_runs(update, pushed, podman):
    image_id = clients.podman_pull(podman, f"docker://{pushed}")
    assert "sha256:" + image_id == update["v1"]["image"]["oci"]["image_id"]
    runnable.check_run_output(clients.podman_run(podman, image_id), update["v1"]["store"])


def test_docker_pulls_and_runs(update, pushed, dockerd):
    # dockerd trusts 127.0.0.0/8 over plain HTTP by default: no insecure-registries needed.
    clients.run_client(["docker", "pull", "--quiet", pushed], env=dockerd)
    image = update["v1"]["image"]["oci"]
    inspect = json.loads(clients.run_client(["docker", "image", "inspect", pushed], env=dockerd).stdout)[0]
    assert inspect["Id"] == image["image_id"]
    assert f"{pushed.rsplit(':', 1)[0]}@{image['manifest']['digest']}" in inspect["RepoDigests"]
    runnable.check_run_output(clients.docker_run(dockerd, pushed), update["v1"]["store"])


def test_zstd_image_through_the_registry_runs_in_containerd(registry, update, containerd):
    image = update["v1"]["image"]["oci+zstd"]
    assert {layer["mediaType"] for layer in image["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    push(registry, f"oci:{update['v1']['path']['oci+zstd']}:app:v1", "layerpipe/zstd", "v1")
    assert_served(registry, "layerpipe/zstd", "v1", image)
    name = f"{registry.host}/layerpipe/zstd:v1"
    ctr.ctr_pull(containerd, name)  # unpacking checks every diff_id
    runnable.check_run_output(ctr.ctr_run(containerd, name), update["v1"]["store"])


def test_update_uploads_only_its_new_layers(registry, update, dockerd):
    v1, v2 = update["v1"]["image"]["oci"], update["v2"]["image"]["oci"]
    push(registry, f"oci:{update['v1']['path']['oci']}:app:v1", "layerpipe/update", "v1")
    shipped = push(registry, f"oci:{update['v2']['path']['oci']}:app:v2", "layerpipe/update", "v2")
    old = {layer["digest"] for layer in v1["layers"]}
    new = [layer for layer in v2["layers"] if layer["digest"] not in old]
    kept = [layer["digest"] for layer in v2["layers"] if layer["digest"] in old]
    assert 1 <= len(new) <= 2 and len(kept) >= 3  # the application and the profile change
    assert shipped.mounted == []
    assert {d: shipped.heads.get(d) for d in kept} == {d: 200 for d in kept}
    assert set(shipped.uploaded) == {layer["digest"] for layer in new} | {v2["config"]["digest"]}
    assert sum(shipped.uploaded[layer["digest"]] for layer in new) == sum(layer["size"] for layer in new)
    assert shipped.uploaded[v2["config"]["digest"]] == v2["config"]["size"]
    assert_served(registry, "layerpipe/update", "v2", v2)
    name = f"{registry.host}/layerpipe/update:v2"
    clients.run_client(["docker", "pull", "--quiet", name], env=dockerd)
    runnable.check_run_output(clients.docker_run(dockerd, name), update["v2"]["store"])
