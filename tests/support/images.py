"""Hand-made images for base-image tests: OCI layouts and Docker archives
with whatever layer tars, configs and indexes a test needs, hostile ones
included (names that climb out, lying digests, multi-platform indexes)."""
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

OCI = "application/vnd.oci.image"
LAYER_TYPES = {"gzip": f"{OCI}.layer.v1.tar+gzip", "zstd": f"{OCI}.layer.v1.tar+zstd", "none": f"{OCI}.layer.v1.tar"}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(*entries) -> bytes:
    """A tar of ENTRIES: ("file", name, data), ("dir", name), ("sym", name, target), ("link", name, target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, *rest in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1
            if kind == "file":
                info.size, info.mode = len(rest[0]), 0o755
                tar.addfile(info, io.BytesIO(rest[0]))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE}[kind]
            info.mode = 0o755
            if rest:
                info.linkname = rest[0]
            tar.addfile(info)
    return out.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "zstd":
        import zstandard
        return zstandard.ZstdCompressor().compress(data)
    return gzip.compress(data, mtime=0) if how == "gzip" else data


def _put(root: Path, data: bytes) -> dict:
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / sha(data)[7:]).write_bytes(data)
    return {"digest": sha(data), "size": len(data)}


def base_config(diff_ids: list[str], arch: str = "amd64", **runtime) -> dict:
    return {"architecture": arch, "os": "linux", "created": "2020-01-01T00:00:00Z", "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"base step {i}"} for i in range(len(diff_ids))]}


def oci_layout(root, tars: list[bytes], *, how: str = "gzip", config: dict | None = None,
               media_type: str | None = None, names=("base:1",), platforms=None) -> dict:
    """Write an OCI layout of one image with layers TARS at ROOT; PLATFORMS
    [(os, arch), ...] puts the manifest (once per platform) in a nested index."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    blobs = [compress(t, how) for t in tars]
    layers = [{"mediaType": media_type or LAYER_TYPES[how], **_put(root, b)} for b in blobs]
    config = config or base_config([sha(t) for t in tars], Env=["PATH=/bin"])
    cdesc = {"mediaType": f"{OCI}.config.v1+json", **_put(root, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": f"{OCI}.manifest.v1+json", "config": cdesc, "layers": layers}
    mdesc = {"mediaType": f"{OCI}.manifest.v1+json", **_put(root, json.dumps(manifest).encode())}
    top = mdesc
    if platforms:
        nested = {"schemaVersion": 2, "mediaType": f"{OCI}.index.v1+json", "manifests": [
            {**mdesc, "platform": {"os": os_, "architecture": arch}} for os_, arch in platforms]}
        top = {"mediaType": f"{OCI}.index.v1+json", **_put(root, json.dumps(nested).encode())}
    index = {"schemaVersion": 2, "manifests": [
        {**top, "annotations": {"org.opencontainers.image.ref.name": n}} for n in names] or [top]}
    (root / "index.json").write_text(json.dumps(index))
    return {"manifest": mdesc, "config": cdesc, "layers": layers, "diff_ids": [sha(t) for t in tars]}


def docker_archive(path, tars: list[bytes], *, tags=("base:1",), config: dict | None = None) -> dict:
    """A Docker archive as docker save wrote them before Docker 25: <id>/layer.tar, <id>.json."""
    config = config or base_config([sha(t) for t in tars], Env=["PATH=/bin"])
    cdata = json.dumps(config).encode()
    files = {f"{sha(cdata)[7:]}.json": cdata}
    names = []
    for i, t in enumerate(tars):
        names.append(f"{i:064x}/layer.tar")
        files[names[-1]] = t
        files[f"{i:064x}/VERSION"] = b"1.0"
    files["manifest.json"] = json.dumps([{"Config": f"{sha(cdata)[7:]}.json", "RepoTags": list(tags),
                                          "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {"config": sha(cdata), "layers": [sha(t) for t in tars]}


def tar_dir(folder, dest) -> None:
    """FOLDER's contents as a tar at DEST (an OCI layout dir -> an oci-archive)."""
    with tarfile.open(dest, "w") as tar:
        for name in sorted(os.listdir(folder)):
            tar.add(os.path.join(folder, name), arcname=name)
