"""Generated store trees for the tar writer's round trip (tests/test_fuzz.py).

A tree is one or two store items, each a file, a symbolic link or a directory
of such: files of random sizes (some across the 512-byte block, the writer's
256 KiB and 1 MiB chunk edges) and random modes (setuid and all), hard links
to earlier files, links with any target, names up to 255 bytes, not UTF-8,
nested until paths run past 100 and 255 bytes.  layer-tar's core tars them
uncompressed; the blob must hold exactly the tree: the same names (bytes),
contents, link targets, and the modes layer-tar(1) promises.
"""
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

from hypothesis import strategies as st

from layerpipe.epoch import source_date_epoch
from layerpipe.layer_tar import layer_tar
from layerpipe.records import RecordReader
from layerpipe.storepath import make_store_path
from layerpipe.tarwriter import CHUNK, SMALL

STORE = "/gnu/store"
NAMES = st.one_of(
    st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=12)
    .map(lambda s: s.encode()),
    st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")),
    st.integers(90, 255).map(lambda n: b"n" * n),
).filter(lambda n: n not in (b".", b".."))
SIZES = st.one_of(st.integers(0, 700), st.sampled_from([511, 512, 513, 1023, 1025, SMALL - 1, SMALL, SMALL + 1,
                                                        CHUNK - 1, CHUNK + 1]))
FILES = st.builds(lambda size, seed, mode: ("file", size, seed, mode),
                  SIZES, st.binary(min_size=1, max_size=8), st.integers(0, 0o7777))
LINKS = st.builds(lambda target: ("link", target),
                  st.binary(min_size=1, max_size=300).map(lambda t: t.replace(b"\0", b"_")))
HARDLINKS = st.just(("hardlink",))
LEAVES = st.one_of(FILES, FILES, LINKS, HARDLINKS)
DIRS = st.recursive(LEAVES, lambda kids: st.builds(lambda kids, mode: ("dir", kids, mode),
                                                   st.dictionaries(NAMES, kids, max_size=4), st.integers(0, 0o777)),
                    max_leaves=12)
TREES = st.lists(DIRS, min_size=1, max_size=2)


def _contents(size: int, seed: bytes) -> bytes:
    return (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]


def make_tree(root: str, tree: list) -> list[str]:
    """Create TREE's items under ROOT + /gnu/store; their store paths."""
    items, files = [], []
    for i, node in enumerate(tree):
        path = make_store_path(STORE, f"item{i}")
        fs = os.path.join(os.fsencode(root), os.fsencode(path.lstrip("/")))
        os.makedirs(os.path.dirname(fs), exist_ok=True)
        _create(fs, node, files)
        items.append(path)
    return items


def _create(path: bytes, node, files: list) -> None:
    kind = node[0]
    if kind == "hardlink" and files:
        os.link(files[-1], path)
    elif kind in ("file", "hardlink"):
        size, seed, mode = node[1:] if kind == "file" else (3, b"x", 0o644)
        with open(path, "wb") as f:
            f.write(_contents(size, seed))
        os.chmod(path, mode)
        files.append(path)
    elif kind == "link":
        os.symlink(node[1], path)
    else:
        os.mkdir(path)
        for name, child in node[1].items():
            _create(os.path.join(path, name), child, files)
        os.chmod(path, node[2])


def tar_items(root: str, items: list[str], blob_dir: str, compression: str = "none") -> tuple[bytes, dict]:
    """The blob layer-tar writes for one layer of ITEMS, and its record."""
    stream = b'{"type":"header","schema_version":1,"stages":[]}\n' + json.dumps(
        {"type": "layer", "index": 0, "paths": items}).encode() + b"\n"
    out = io.BytesIO()
    layer_tar(RecordReader(io.BytesIO(stream), "fuzz"), out, root=root, blob_dir=blob_dir,
              compression=compression, level=None, jobs=1, quiet=True)
    record = json.loads(out.getvalue().splitlines()[-1])
    with open(record["blob"], "rb") as f:
        return f.read(), record


def expected(root: str, items: list[str]) -> dict[bytes, tuple]:
    """What the layer must hold, from the files: name -> (type, mode, link target, sha256 of contents)."""
    want = {b"gnu/": (tarfile.DIRTYPE, 0o755, b"", None), b"gnu/store/": (tarfile.DIRTYPE, 0o755, b"", None)}
    for item in items:
        top = os.path.join(os.fsencode(root), os.fsencode(item.lstrip("/")))
        todo = [(top, os.fsencode(item.lstrip("/")))]
        while todo:
            path, name = todo.pop()
            st_ = os.lstat(path)
            if stat.S_ISDIR(st_.st_mode):
                want[name + b"/"] = (tarfile.DIRTYPE, 0o555, b"", None)
                todo += [(os.path.join(path, c), name + b"/" + c) for c in os.listdir(path)]
            elif stat.S_ISLNK(st_.st_mode):
                want[name] = (tarfile.SYMTYPE, 0o777, os.readlink(path), None)
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                want[name] = (tarfile.REGTYPE, 0o555 if st_.st_mode & 0o100 else 0o444, b"", digest)
    return want


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def read_blob(blob: bytes) -> dict[bytes, tuple]:
    """The layer as Python's tarfile reads it, in the shape of expected()."""
    got = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
        for m in tar:
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", source_date_epoch()), m.name
            body = tar.extractfile(m).read() if m.isreg() else None
            name = _bytes(m.name) + (b"/" if m.isdir() else b"")
            assert name not in got, f"{name!r} twice in the layer"
            got[name] = (m.type, m.mode, _bytes(m.linkname), None if body is None else hashlib.sha256(body).hexdigest())
            if m.isreg():
                assert len(body) == m.size
    return got


def check_round_trip(root: str, items: list[str], blob_and_record) -> None:
    blob, record = blob_and_record
    assert record["uncompressed_size"] == len(blob)
    want, got = expected(root, items), read_blob(blob)
    if want != got:
        missing = sorted(set(want) - set(got))[:5]
        extra = sorted(set(got) - set(want))[:5]
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:5]
        raise AssertionError(f"the layer is not the tree: missing {missing}, extra {extra}, "
                             f"different {[(k, want[k], got[k]) for k in wrong]}")


def _unpacked(rootfs: Path, want: dict[bytes, tuple]) -> dict[bytes, tuple]:
    got = {}
    for name in want:
        path = os.path.join(os.fsencode(rootfs), name.rstrip(b"/"))
        if not os.path.lexists(path):
            continue
        st_ = os.lstat(path)
        if stat.S_ISDIR(st_.st_mode):
            got[name] = (tarfile.DIRTYPE, None, b"", None)
        elif stat.S_ISLNK(st_.st_mode):
            got[name] = (tarfile.SYMTYPE, 0o777, os.readlink(path), None)
        else:
            with open(path, "rb") as f:
                got[name] = (tarfile.REGTYPE, stat.S_IMODE(st_.st_mode), b"",
                             hashlib.sha256(f.read()).hexdigest())
    return got


def check_umoci(root: str, items: list[str], work: Path) -> None:
    """The tree through layer-tar (gzip) and image-assemble --format oci, then
    unpacked by umoci: the same names, contents, modes and link targets."""
    from tests.support.clients import umoci_unpack

    blob_dir = work / "blobs"
    _, record = tar_items(root, items, str(blob_dir), "gzip")
    proc = subprocess.run([str(Path(__file__).resolve().parents[2] / "bin" / "image-assemble"), "--format", "oci",
                           "--tag", "fuzz:1", "-o", str(work / "oci")],
                          input=json.dumps(record).encode() + b"\n", capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    rootfs = umoci_unpack(work / "oci", "fuzz:1", work / "bundle")
    want = {k: (t, None if t == tarfile.DIRTYPE else m, link, d) for k, (t, m, link, d) in expected(root, items).items()}
    got = _unpacked(rootfs, want)
    assert got == want, [(k, want[k], got.get(k)) for k in sorted(want) if want[k] != got.get(k)][:5]
