"""Docker's `docker save` files, added to an OCI layout as Docker 25 does.

manifest.json and repositories point into the layout's blobs/sha256/, so one
tar is both a Docker archive (for `docker load`, `podman load`) and an OCI
image layout (for skopeo, umoci, containerd).  Docker archives cannot carry
zstd layers: Docker detects only gzip and plain tar.
"""
from ..imageconfig import canonical_json
from .layout import Layout


def add_docker_files(layout: Layout, config_digest: str, layer_digests: list[str], tags: list[str]) -> None:
    def blob(digest: str) -> str:
        return "blobs/sha256/" + digest.split(":", 1)[1]

    layout.files["manifest.json"] = canonical_json([{
        "Config": blob(config_digest), "RepoTags": tags, "Layers": [blob(d) for d in layer_digests]}])
    repos: dict[str, dict[str, str]] = {}
    for tag in tags:
        name, _, version = tag.rpartition(":")
        repos.setdefault(name, {})[version] = config_digest.split(":", 1)[1]
    layout.files["repositories"] = canonical_json(repos)
