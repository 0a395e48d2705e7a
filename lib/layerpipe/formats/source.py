"""Reading images that exist: an OCI layout (a directory or a tar of one) or a
Docker archive (`docker save`, a tar, or a directory it was unpacked into).

A source opens the files of the image by their names inside it and never
lets a name leave it: a directory source refuses names that resolve outside
the directory, a tar source follows links between its members only (never
onto the file system), at most a few hops.  find_image() reads index.json
or manifest.json and says where the config and the layers of one image are.
Used by layer-split --previous (lenient: the first image) and image-assemble
--base (strict: one image, or a clear refusal).
"""
import gzip
import json
import os
import posixpath
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Iterator

from ..errors import LayerpipeError

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"}
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"
MAX_MEMBERS = 100_000   # files in an image archive; 125 layers need a few hundred
MAX_JSON = 16 << 20     # bytes of one index, manifest or config
_LINK_HOPS = 8


def _clean(name: str) -> str | None:
    """NAME relative to the image's root, or None when it would leave it."""
    name = posixpath.normpath(name)
    if name.startswith("/") or name == ".." or name.startswith("../"):
        return None
    return name


class DirSource:
    def __init__(self, root: str, where: str):
        self.root = os.path.realpath(root)
        self.where = where

    def _path(self, name: str) -> str | None:
        clean = _clean(name)
        if clean is None:
            return None
        path = os.path.realpath(os.path.join(self.root, clean))
        return path if path.startswith(self.root + os.sep) and os.path.isfile(path) else None

    def exists(self, name: str) -> bool:
        return self._path(name) is not None

    def file_path(self, name: str) -> str | None:
        """The file on disk, for hard links (a tar source has none)."""
        return self._path(name)

    def size(self, name: str) -> int:
        return os.path.getsize(self._need(name))

    def open(self, name: str) -> IO[bytes]:
        return open(self._need(name), "rb")

    def _need(self, name: str) -> str:
        path = self._path(name)
        if path is None:
            raise LayerpipeError(f"no file {name!r} in the image", self.where)
        return path


class TarSource:
    def __init__(self, tar: tarfile.TarFile, where: str):
        self.tar, self.where = tar, where
        self.members: dict[str, tarfile.TarInfo] = {}
        for count, member in enumerate(tar, 1):
            if count > MAX_MEMBERS:
                raise LayerpipeError(f"more than {MAX_MEMBERS} files in the archive", where)
            clean = _clean(member.name)
            if clean is not None:
                self.members[clean] = member

    def _member(self, name: str) -> tarfile.TarInfo | None:
        clean = _clean(name)
        for _ in range(_LINK_HOPS):
            member = self.members.get(clean) if clean is not None else None
            if member is None or member.isfile():
                return member
            if member.issym():
                clean = _clean(posixpath.join(posixpath.dirname(clean), member.linkname))
            elif member.islnk():
                clean = _clean(member.linkname)
            else:
                return None
        return None

    def exists(self, name: str) -> bool:
        return self._member(name) is not None

    def file_path(self, name: str) -> None:
        return None

    def size(self, name: str) -> int:
        return self._need(name).size

    def open(self, name: str) -> IO[bytes]:
        return self.tar.extractfile(self._need(name))

    def _need(self, name: str) -> tarfile.TarInfo:
        member = self._member(name)
        if member is None:
            raise LayerpipeError(f"no file {name!r} in the archive", self.where)
        return member


@contextmanager
def open_source(path: str, where: str | None = None) -> Iterator[DirSource | TarSource]:
    """A directory or an uncompressed tar; anything else is refused.  Errors
    name WHERE (default: PATH)."""
    where = where or path
    if os.path.isdir(path):
        yield DirSource(path, where)
        return
    try:
        with open(path, "rb") as f:
            head = f.read(262)
    except OSError as exc:
        raise LayerpipeError(exc.strerror or str(exc), where) from None
    if head[:2] == b"\x1f\x8b" or head[:4] == b"\x28\xb5\x2f\xfd":
        raise LayerpipeError("a compressed archive: decompress it first (an image archive is a plain tar)", where)
    if head[257:262] != b"ustar":
        raise LayerpipeError("neither a directory nor a tar archive", where)
    try:
        with tarfile.open(path, "r:") as tar:
            yield TarSource(tar, where)
    except tarfile.TarError as exc:
        raise LayerpipeError(f"damaged tar archive: {exc}", where) from None


def blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def read_small(src, name: str, what: str) -> bytes:
    """The bytes of a JSON document of the image, at most MAX_JSON of them."""
    if src.size(name) > MAX_JSON:
        raise LayerpipeError(f"{what} {name} is larger than {MAX_JSON >> 20} MiB", src.where)
    with src.open(name) as f:
        return f.read()


def parse_json(data: bytes, src, name: str, what: str):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LayerpipeError(f"{what} {name} is not JSON: {exc}", src.where) from None


def read_json(src, name: str, what: str):
    return parse_json(read_small(src, name, what), src, name, what)


@dataclass
class ImageEntry:
    """One image of a source: its config and layers as files of the source."""
    config: str                               # file name of the config
    config_digest: str | None                 # known from a manifest, else None
    layers: list[tuple[str, str | None, str | None]]  # (file name, digest, mediaType)
    names: list[str] = field(default_factory=list)
    manifest: dict | None = None              # the manifest's descriptor (OCI), None for manifest.json


def _digest(value, what: str, where: str) -> str:
    if not (isinstance(value, str) and value.startswith("sha256:") and len(value) == 71
            and all(c in "0123456789abcdef" for c in value[7:])):
        raise LayerpipeError(f"{what}: not a sha256 digest: {value!r}", where)
    return value


def _names(desc: dict) -> list[str]:
    notes = desc.get("annotations") or {}
    return [notes[k] for k in (IMAGE_NAME, REF_NAME) if isinstance(notes.get(k), str)]


def _index_candidates(src) -> list[tuple[dict, list[str]]]:
    """The index's entries, one per manifest digest, with all the names it is listed under."""
    index = read_json(src, "index.json", "index")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not all(isinstance(d, dict) for d in manifests):
        raise LayerpipeError("index.json has no list of manifests", src.where)
    found: dict[str, tuple[dict, list[str]]] = {}
    for desc in manifests:
        digest = _digest(desc.get("digest"), "index.json manifest", src.where)
        found.setdefault(digest, (desc, []))[1].extend(_names(desc))
    return list(found.values())


def _docker_candidates(src) -> list[tuple[dict, list[str]]]:
    entries = read_json(src, "manifest.json", "manifest")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise LayerpipeError("manifest.json is not a list of images", src.where)
    return [(e, [t for t in e.get("RepoTags") or [] if isinstance(t, str)]) for e in entries]


def _qualified(name: str) -> str:
    from ..imageconfig import qualified_name

    last = name.rpartition("/")[2]
    return qualified_name(name if ":" in last or "@" in last else name + ":latest")


def _choose(cands: list, ref: str | None, strict: bool, where: str):
    if ref is not None:
        chosen = [c for c in cands if ref in c[1] or _qualified(ref) in map(_qualified, c[1])]
        if not chosen:
            known = sorted({n for _, names in cands for n in names})
            raise LayerpipeError(f"no image named {ref!r} in it (names: {', '.join(known) or 'none'})", where)
        cands = chosen
    if not cands:
        raise LayerpipeError("it holds no image", where)
    if len(cands) > 1 and strict:
        names = ", ".join(n[0] if n else "(no name)" for _, n in cands)
        raise LayerpipeError(f"it holds {len(cands)} images ({names}); choose one by name", where)
    return cands[0]


def _platform_manifest(src, desc: dict, arch: str | None, strict: bool) -> dict:
    """Follow image indexes down to the manifest for linux/ARCH."""
    for _ in range(4):
        if desc.get("mediaType") not in INDEX_TYPES:
            return desc
        index = read_json(src, blob_name(_digest(desc.get("digest"), "index", src.where)), "index")
        entries = [d for d in index.get("manifests") or [] if isinstance(d, dict)]
        plats = [(d, d.get("platform") or {}) for d in entries]
        fit = [d for d, p in plats if p.get("os") == "linux" and (arch is None or p.get("architecture") == arch)]
        if len(fit) != 1 and (strict or not fit):
            have = ", ".join(sorted({f"{p.get('os')}/{p.get('architecture')}" + (f"/{p['variant']}" if p.get("variant") else "")
                                     for _, p in plats})) or "none"
            what = "no image" if not fit else f"{len(fit)} images"
            raise LayerpipeError(f"a multi-platform index with {what} for linux/{arch} "
                                 f"(it has {have}); choose with --arch", src.where)
        desc = fit[0]
    raise LayerpipeError("image indexes nested too deep", src.where)


def find_image(src, ref: str | None = None, arch: str | None = None, strict: bool = True) -> ImageEntry:
    """The image named REF (or the only one; the first unless STRICT), for ARCH
    when the source holds a multi-platform index."""
    if src.exists("index.json"):
        return _index_entry(src, *_choose(_index_candidates(src), ref, strict, src.where), arch, strict)
    if src.exists("manifest.json"):
        return _docker_entry(src, *_choose(_docker_candidates(src), ref, strict, src.where))
    raise LayerpipeError(NOT_AN_IMAGE, src.where)


def all_images(src) -> list[ImageEntry]:
    """Every image the source holds, in the order its index lists them (the
    first platform's manifest of a multi-platform index)."""
    if src.exists("index.json"):
        return [_index_entry(src, desc, names, None, False) for desc, names in _index_candidates(src)]
    if src.exists("manifest.json"):
        return [_docker_entry(src, entry, names) for entry, names in _docker_candidates(src)]
    raise LayerpipeError(NOT_AN_IMAGE, src.where)


NOT_AN_IMAGE = "neither an OCI layout nor a Docker archive (no index.json, no manifest.json)"


def _index_entry(src, desc: dict, names: list[str], arch: str | None, strict: bool) -> ImageEntry:
    desc = _platform_manifest(src, desc, arch, strict)
    if desc.get("mediaType", next(iter(MANIFEST_TYPES))) not in MANIFEST_TYPES:
        raise LayerpipeError(f"not an image manifest: mediaType {desc.get('mediaType')!r}", src.where)
    digest = _digest(desc.get("digest"), "manifest", src.where)
    manifest = read_json(src, blob_name(digest), "manifest")
    try:
        config = manifest["config"]
        layers = [(blob_name(_digest(d["digest"], "layer", src.where)), d["digest"], d.get("mediaType"))
                  for d in manifest["layers"]]
        return ImageEntry(blob_name(_digest(config["digest"], "config", src.where)), config["digest"],
                          layers, names, {"mediaType": desc.get("mediaType"), "digest": digest,
                                          "size": desc.get("size")})
    except (KeyError, TypeError):
        raise LayerpipeError(f"manifest {digest} lacks its config or layers", src.where) from None


def _docker_entry(src, entry: dict, names: list[str]) -> ImageEntry:
    config, layers = entry.get("Config"), entry.get("Layers")
    if not isinstance(config, str) or not isinstance(layers, list) or not all(isinstance(p, str) for p in layers):
        raise LayerpipeError("manifest.json lacks Config or Layers", src.where)
    return ImageEntry(config, None, [(p, None, None) for p in layers], names)


def decompressed(stream: IO[bytes]) -> tuple[IO[bytes], str]:
    """The uncompressed stream of a layer blob, and its compression by its first bytes."""
    head = stream.read(4)
    rest = _Prefixed(head, stream)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=rest), "gzip"
    if head == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(rest, read_across_frames=True), "zstd"
    return rest, "none"


class _Prefixed:
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(n)
        if n < 0:
            data, self.head = self.head, b""
            return data + self.stream.read()
        data, self.head = self.head[:n], self.head[n:]
        return data + (self.stream.read(n - len(data)) if len(data) < n else b"")
