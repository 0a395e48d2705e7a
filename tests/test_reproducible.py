"""The same store built into an image under everything that differs between
two machines, users or days: umask, TZ, locale, PYTHONHASHSEED, working
directory, the order files were created in, their inode numbers and
directory order (another file system), and a store deduplicated with hard
links (`nix-store --optimise`) or not.  Each variant changes one thing and
must give the reference's image byte for byte; a difference is reported as
the first tar entry (of the image, then of the layer) that differs.
(test_determinism.py changes several things at once across formats.)"""
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from conftest import BIN
from tests.support.store import build_store

SHM = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
BASE_ENV = {"TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "1"}
VARIANTS = {
    "umask-077": {"umask": 0o077},
    "umask-000": {"umask": 0o000},
    "tz-kiritimati": {"env": {"TZ": "Pacific/Kiritimati"}},
    "tz-unset-localtime": {"env": {"TZ": None}},
    "locale-C": {"env": {"LANG": "C", "LC_ALL": "C"}},
    "locale-POSIX-no-lang": {"env": {"LANG": None, "LC_ALL": "POSIX"}},
    "hashseed-random": {"env": {"PYTHONHASHSEED": "random"}},
    "hashseed-4242": {"env": {"PYTHONHASHSEED": "4242"}},
    "cwd-root": {"cwd": "/"},
    "cwd-inside-store": {"cwd": "store"},
    "creation-order-reversed": {"reverse": True},
    "inode-order-shuffled": {"reverse": True, "pad_inodes": 97},
    "other-file-system": {"on": SHM, "reverse": True},
    "hard-link-deduplicated": {"hardlink": True},
    "mtimes-and-atimes-changed": {"touch": True},
}


def make_reference_store(root: str):
    store = build_store(root)
    many = store.fs(store.paths["glibc"]) + "/share/many"
    os.makedirs(many)
    for i in range(40):  # a directory whose listing order is up to the file system; equal files to link
        with open(f"{many}/f{(i * 37) % 40:02d}-{'x' * (i % 7)}", "wb") as f:
            f.write(b"same\n" if i % 2 else b"file %d\n" % i)
    return store


def entries(root: str) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        found += [os.path.join(folder, n) for n in dirs + files]
    return sorted(os.path.relpath(p, root) for p in found)


def copy_store(src: str, dst: str, *, reverse=False, hardlink=False, pad_inodes=0, touch=False) -> None:
    """Recreate the tree SRC at DST, entries in sorted or reversed order; padding
    files made and removed in between so inode numbers interleave differently."""
    os.makedirs(dst)
    first_of: dict[bytes, str] = {}
    for n, rel in enumerate(reversed(entries(src)) if reverse else entries(src)):
        s, d = os.path.join(src, rel), os.path.join(dst, rel)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        st = os.lstat(s)
        if pad_inodes and n % 3 == 0:
            for i in range(pad_inodes % (n + 2)):
                open(os.path.join(dst, f".pad{i}"), "w").close()
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISDIR(st.st_mode):
            os.makedirs(d, exist_ok=True)
        else:
            data = open(s, "rb").read()
            key = hashlib.sha256(data + bytes([st.st_mode & 0o100])).digest()
            if hardlink and key in first_of:
                os.link(first_of[key], d)
                continue
            with open(d, "wb") as f:
                f.write(data)
            first_of[key] = d
    for rel in entries(src):  # modes last: read-only directories would refuse their contents
        s, d = os.path.join(src, rel), os.path.join(dst, rel)
        if not os.path.islink(d):
            os.chmod(d, stat.S_IMODE(os.lstat(s).st_mode))
        if touch:
            os.utime(d, (12345, 2 ** 31 - 1), follow_symlinks=False)
    for name in os.listdir(dst):
        if name.startswith(".pad"):
            os.unlink(os.path.join(dst, name))


def build(tmp, reference_root: str, graph: str, variant: dict) -> bytes:
    tmp.mkdir()
    parent = str(tmp)
    if variant.get("on"):
        parent = os.path.join(variant["on"], f"layerpipe-repro-{os.getpid()}-{tmp.name}")
    root = os.path.join(parent, "root")
    old = os.umask(variant.get("umask", 0o022))
    try:
        copy_store(reference_root, root, reverse=variant.get("reverse", False),
                   hardlink=variant.get("hardlink", False), pad_inodes=variant.get("pad_inodes", 0),
                   touch=variant.get("touch", False))
        env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "XDG_CACHE_HOME")}
        for key, value in {**BASE_ENV, **variant.get("env", {})}.items():
            env.pop(key, None) if value is None else env.__setitem__(key, value)
        cwd = {"store": os.path.join(root, "gnu", "store"), None: str(tmp)}.get(variant.get("cwd"), variant.get("cwd"))
        script = (f"set -o pipefail; umask {variant.get('umask', 0o022):03o}; {BIN}/closure-read --root {root} {graph}"
                  f" | {BIN}/layer-split | {BIN}/layer-tar --root {root} --blob-dir {tmp}/blobs"
                  f" | {BIN}/image-assemble --tag app:1 -o {tmp}/img.tar >/dev/null")
        proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        return (tmp / "img.tar").read_bytes()
    finally:
        os.umask(old)
        if variant.get("on"):
            shutil.rmtree(parent, ignore_errors=True)


def _members(data: bytes) -> list[tuple[str, tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar]


def _layers(image: dict) -> list[str]:
    """The layer blob names of an image's (first) manifest, base first."""
    index = json.loads(image["index.json"])
    manifest = json.loads(image["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    return ["blobs/sha256/" + d["digest"][7:] for d in manifest["layers"]]


def first_difference(a: bytes, b: bytes) -> str:
    """Where image A first differs from reference B: the first layer (by its
    place in the manifest) that differs and the first entry of it that does,
    else the first entry of the image archive."""
    files_a, files_b = ({n: body for n, _, body in _members(x)} for x in (a, b))
    for i, (la, lb) in enumerate(zip(_layers(files_a), _layers(files_b))):
        if la != lb:
            return f"layer {i}: " + _first_entry(gzip.decompress(files_a[la]), gzip.decompress(files_b[lb]))
    return "image: " + _first_entry(a, b)


def _first_entry(a: bytes, b: bytes) -> str:
    for (name_a, ma, body_a), (name_b, mb, body_b) in zip(_members(a), _members(b)):
        if name_a != name_b:
            return f"entry {name_a!r} where the reference has {name_b!r}"
        info_a, info_b = ma.get_info(), mb.get_info()
        if info_a != info_b:
            return f"entry {name_a!r} differs in {[k for k in info_a if info_a[k] != info_b.get(k)]}"
        if body_a != body_b:
            return f"contents of {name_a!r} differ"
    return f"one tar has more entries ({len(_members(a))} vs {len(_members(b))})"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repro")
    store = make_reference_store(str(tmp / "store"))
    graph = store.write_graph(str(tmp / "graph.refs"))
    image = build(tmp / "reference", store.root, graph, {})
    return {"root": store.root, "graph": graph, "image": image}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_same_image_bytes(reference, tmp_path, name):
    variant = VARIANTS[name]
    if "on" in variant and variant["on"] is None:
        pytest.skip("no /dev/shm to put the store on another file system")
    image = build(tmp_path / name, reference["root"], reference["graph"], variant)
    assert image == reference["image"], first_difference(image, reference["image"])


def test_a_real_difference_is_found_and_located(reference, tmp_path):
    """The control: one byte of one file changed gives another image, and the
    report names that file inside its layer."""
    root = tmp_path / "changed"
    copy_store(reference["root"], str(root))
    victim = next(p for p in root.rglob("many/*") if p.read_bytes() == b"file 0\n")
    victim.chmod(0o644)
    victim.write_bytes(b"file 1\n")
    tmp = tmp_path / "x"
    tmp.mkdir()
    image = build(tmp / "b", str(root), reference["graph"], {})
    assert image != reference["image"]
    where = first_difference(image, reference["image"])
    assert where == f"layer 0: contents of '{victim.relative_to(root)}' differ", where
