"""Generated base images for the base-image readers (tests/test_fuzz.py).

An image is a Docker archive (a tar), an OCI layout tar or an OCI layout
directory, built right (digests, diff_ids, sizes all agree) from layers whose
members are drawn from a pool of safe and hostile entries, with none to a few
kinds of spoiling applied: a JSON document replaced by any JSON, a digest
changed, a file dropped, a blob's bytes flipped, a second image, a member that
climbs out or a link inside the archive that points out.  An image with no
spoiling and only safe members is `sound`: the readers must accept it.
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field

import zstandard
from hypothesis import strategies as st

from layerpipe.storepath import make_store_path

ITEM = make_store_path("/gnu/store", "base-1.0").lstrip("/")
# (name, type, link target): safe ones, then ones a reader may refuse but must survive
SAFE_MEMBERS = [("a", tarfile.REGTYPE, ""), ("b", tarfile.DIRTYPE, ""), ("b/c", tarfile.REGTYPE, ""),
                (f"{ITEM}/bin/x", tarfile.REGTYPE, ""), ("link1", tarfile.SYMTYPE, "/etc/passwd"),
                ("b/link2", tarfile.SYMTYPE, "../../.."), ("hard", tarfile.LNKTYPE, "a"),
                ("./dot", tarfile.REGTYPE, ""), ("b/.wh.gone", tarfile.REGTYPE, ""), ("n" * 150, tarfile.REGTYPE, ""),
                ("caf\u00e9", tarfile.REGTYPE, "")]
HOSTILE_MEMBERS = [("../evil", tarfile.REGTYPE, ""), ("/abs", tarfile.REGTYPE, ""), ("lib", tarfile.SYMTYPE, "/etc"),
                   ("lib/passwd", tarfile.REGTYPE, ""), ("hard2", tarfile.LNKTYPE, "../../etc/shadow"),
                   ("b/../../x", tarfile.REGTYPE, ""), ("", tarfile.REGTYPE, ""), (".", tarfile.DIRTYPE, ""),
                   ("fifo", tarfile.FIFOTYPE, ""), ("dev", tarfile.CHRTYPE, "")]
SPOILS = ["json", "digest", "drop", "flip", "two-images", "outer-escape", "outer-link", "arch", "diff-ids",
          "runtime", "history", "media-type", "truncate", "trailing"]
LAYER_TYPES = {"none": "application/vnd.oci.image.layer.v1.tar", "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
ANY_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                        lambda k: st.one_of(st.lists(k, max_size=3), st.dictionaries(st.text(max_size=6), k, max_size=3)),
                        max_leaves=8)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(members: list[tuple]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            data = name.encode() * 3 if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


@dataclass
class Image:
    kind: str                      # docker, oci-tar, oci-dir
    files: dict[str, bytes]
    layer_count: int
    sound: bool
    links: dict[str, str] = field(default_factory=dict)   # extra symlinks: name -> target
    blobs: list[bytes] = field(default_factory=list)

    def write(self, folder) -> str:
        folder = str(folder)
        if self.kind == "oci-dir":
            top = os.path.join(folder, "image")
            for name, data in self.files.items():
                path = os.path.join(top, name)
                if not os.path.normpath(path).startswith(top):
                    continue  # a directory cannot hold a name that climbs out
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
            for name, target in self.links.items():
                path = os.path.join(top, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                elif os.path.lexists(path):
                    os.unlink(path)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.symlink(target, path)
            return top
        path = os.path.join(folder, "image.tar")
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in self.files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for name, target in self.links.items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
        return path

    def __repr__(self) -> str:  # the blobs are long: say what they are
        files = {name: f"{len(data)} bytes" if len(data) > 200 else data for name, data in self.files.items()}
        return f"Image({self.kind!r}, files={files!r}, links={self.links!r}, sound={self.sound})"

    def layer_blob(self) -> bytes:
        return self.blobs[0] if self.blobs else b""


@st.composite
def images(draw) -> Image:
    kind = draw(st.sampled_from(["docker", "oci-tar", "oci-dir"]))
    hostile = draw(st.integers(0, 3)) == 0
    pool = SAFE_MEMBERS + (HOSTILE_MEMBERS if hostile else [])
    layers = []
    for _ in range(draw(st.integers(0, 3))):
        members = draw(st.lists(st.sampled_from(pool), max_size=6))
        how = draw(st.sampled_from(["none", "gzip", "zstd"]))
        plain = layer_tar(members)
        layers.append((plain, compress(plain, how), how))
    spoils = set(draw(st.lists(st.sampled_from(SPOILS), max_size=2))) if draw(st.booleans()) else set()
    if kind == "docker":
        spoils.discard("media-type")  # a Docker archive names no media types
    blobs = [blob for _, blob, _ in layers]
    if "flip" in spoils and blobs:
        i = draw(st.integers(0, len(blobs) - 1))
        blob = bytearray(blobs[i])
        pos = draw(st.integers(0, len(blob) - 1))
        blob[pos] ^= draw(st.integers(1, 255))
        blobs[i] = bytes(blob)
    if "truncate" in spoils and blobs:
        blobs[-1] = blobs[-1][:draw(st.integers(0, max(0, len(blobs[-1]) - 1)))]
    if "trailing" in spoils and blobs:
        blobs[0] = blobs[0] + b"\0" * 512 + b"more"
    config = {"architecture": "arm64" if "arch" in spoils else "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [sha(plain) for plain, _, _ in layers]
                         + (["sha256:" + "0" * 64] if "diff-ids" in spoils else [])},
              "config": draw(ANY_JSON) if "runtime" in spoils else {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
              "history": draw(ANY_JSON) if "history" in spoils else [{"created_by": "fuzz"}] * len(layers)}
    config_data = json.dumps(config).encode()
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    if kind == "docker":
        names = [f"{i}/layer.tar" for i in range(len(layers))]
        files.update(zip(names, blobs))
        config_name = sha(config_data)[7:] + ".json"
        files[config_name] = config_data
        entry = {"Config": config_name, "RepoTags": ["fuzz:1"], "Layers": names}
        index_name, index = "manifest.json", [entry] + ([dict(entry, RepoTags=["other:1"])]
                                                        if "two-images" in spoils else [])
    else:
        for blob in blobs:
            files["blobs/sha256/" + sha(blob)[7:]] = blob
        files["blobs/sha256/" + sha(config_data)[7:]] = config_data
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": sha(config_data), "size": len(config_data)},
                    "layers": [{"mediaType": LAYER_TYPES["zstd" if "media-type" in spoils else how],
                                "digest": sha(blob), "size": len(blob)} for (_, _, how), blob in zip(layers, blobs)]}
        manifest_data = json.dumps(manifest).encode()
        files["blobs/sha256/" + sha(manifest_data)[7:]] = manifest_data
        files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
        desc = {"mediaType": manifest["mediaType"], "digest": sha(manifest_data), "size": len(manifest_data),
                "annotations": {"org.opencontainers.image.ref.name": "fuzz:1"}}
        index_name, index = "index.json", {"schemaVersion": 2, "manifests": [desc] + (
            [dict(desc, digest="sha256:" + "1" * 64)] if "two-images" in spoils else [])}
    files[index_name] = json.dumps(index).encode()
    names = sorted(files)
    if "json" in spoils:
        files[draw(st.sampled_from([n for n in names if not n.endswith("layer.tar")]))] = json.dumps(
            draw(ANY_JSON)).encode()
    if "digest" in spoils:
        name = draw(st.sampled_from(names))
        files[name] = files[name].replace(b"sha256:", b"sha256:0", 1)
    if "drop" in spoils:
        del files[draw(st.sampled_from(names))]
    if "outer-escape" in spoils:
        files[draw(st.sampled_from(["../outside", "/abs", "blobs/../../x"]))] = b"{}"
    if "outer-link" in spoils:
        links[draw(st.sampled_from([index_name, names[0], "blobs/sha256"]))] = draw(
            st.sampled_from(["/etc/passwd", "../../../etc/hostname", index_name, "loop", "."]))
    return Image(kind, files, len(layers), sound=not spoils and not hostile, links=links, blobs=blobs)


IMAGES = images()
