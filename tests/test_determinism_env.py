"""Same store contents, same image bytes, whatever the environment and the
file system say: umask, TZ, locale (C, C.UTF-8, POSIX, a Turkish and a
Latin-1 one made with localedef), PYTHONHASHSEED, working directory, time
stamps, another file system (tmpfs), the
order the store was written in, the order of its inodes, and whether
identical files are hard-linked (`guix gc --optimize`, `nix-store --optimise`).

Each variant changes one thing from the baseline and builds the whole
pipeline through real pipes, into a Docker archive, an OCI layout, an OCI
archive (gzip) and an OCI archive with zstd layers; every output is compared
whole, byte for byte, with the baseline's, and a difference is reported as
the first differing entry (tests/support/imagediff.py), down inside the
layer.  tests/test_determinism.py covers temp dirs, tmpfs, blob dirs and -j.
"""
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import BIN
from tests.support.imagediff import _plain, image_difference
from tests.support.store import StoreFixture, build_store

ORDER = ["glibc", "libfoo", "app", "profile"]
_CLEANUP: list[str] = []   # stores made outside tmp_path (/dev/shm)


@pytest.fixture(scope="module", autouse=True)
def _remove_outside_stores():
    yield
    for folder in _CLEANUP:
        shutil.rmtree(folder, ignore_errors=True)
BASELINE = {"umask": 0o022, "env": {"TZ": "UTC", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"},
            "cwd": "tmp", "order": ORDER, "store": "plain"}
VARIANTS = {
    "umask 077": {"umask": 0o077},
    "umask 000": {"umask": 0o000},
    "TZ far from UTC": {"env": {"TZ": "Pacific/Chatham", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}},
    "LC_ALL=C": {"env": {"TZ": "UTC", "LC_ALL": "C", "PYTHONHASHSEED": "0"}},
    "LANG=POSIX, no LC_ALL": {"env": {"TZ": "UTC", "LANG": "POSIX", "PYTHONHASHSEED": "0"}},
    # compiled by localedef into a private LOCPATH (the locales fixture)
    "LC_ALL=tr_TR.UTF-8": {"env": {"TZ": "UTC", "LC_ALL": "tr_TR.UTF-8", "PYTHONHASHSEED": "0"}},
    "LC_ALL=de_DE.ISO-8859-1": {"env": {"TZ": "UTC", "LC_ALL": "de_DE.ISO-8859-1", "PYTHONHASHSEED": "0"}},
    "PYTHONHASHSEED=random": {"env": {"TZ": "UTC", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "random"}},
    "PYTHONHASHSEED=4242": {"env": {"TZ": "UTC", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "4242"}},
    "working directory /": {"cwd": "/"},
    "reversed creation order": {"order": ORDER[::-1]},
    "reversed inode order": {"store": "reversed-copy"},
    "hard-linked duplicates": {"store": "hardlinked"},
    "TZ unset (the machine's localtime)": {"env": {"LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}},
    "working directory inside the store": {"cwd": "store"},
    "time stamps changed": {"store": "touched"},
    "another file system (tmpfs)": {"store": "tmpfs"},
}
FORMATS = ["docker-archive", "oci", "oci-archive", "zstd"]
# Files every item gets, so that there are duplicates to hard-link, and names
# that sort differently by bytes, by locale and by case.
SHARED = b"GPL-3.0-or-later\n" * 50
ODD_NAMES = [b"a", b"B", b"_x", b"\xc3\xa9t\xc3\xa9", b"Z", b"\xff\xfe-latin1", b"a.b", b"a-b", b"a b"]


def make_store(root: str, variant: dict) -> StoreFixture:
    """The fixture store with the variant's creation order, umask and file system layout."""
    old = os.umask(variant["umask"])
    try:
        staging = root + ("-staging" if variant["store"] != "plain" else "")
        store = add_extras(build_store(staging, order=variant["order"]), reverse=variant["order"] != ORDER)
        if variant["store"] == "reversed-copy":
            copy_reversed(os.fsencode(staging), os.fsencode(root))
        elif variant["store"] == "hardlinked":
            os.rename(staging, root)
            assert hardlink_duplicates(os.fsencode(root)) == 7  # 3 + 3 shared files, the empty file
        elif variant["store"] == "touched":  # times a copy or a checkout would give, one per entry
            os.rename(staging, root)
            for n, (folder, dirs, files) in enumerate(os.walk(root)):
                for m, name in enumerate(dirs + files):
                    os.utime(os.path.join(folder, name), (1e9 + n * 1000 + m, 2e9 - n * 1000 - m),
                             follow_symlinks=False)
        elif variant["store"] == "tmpfs":  # another file system: other inode and readdir order
            if not os.access("/dev/shm", os.W_OK):
                pytest.skip("no writable /dev/shm")
            elsewhere = tempfile.mkdtemp(dir="/dev/shm", prefix="layerpipe-determinism-")
            copy_reversed(os.fsencode(staging), os.fsencode(elsewhere + "/root"))
            os.symlink(elsewhere + "/root", root)
            _CLEANUP.append(elsewhere)
    finally:
        os.umask(old)
    store.root = root
    return store


def add_extras(store: StoreFixture, reverse: bool = False) -> StoreFixture:
    for path in store.references:
        item = os.fsencode(store.fs(path))
        os.makedirs(item + b"/share/doc", exist_ok=True)
        _write(item + b"/share/doc/LICENSE", SHARED, 0o444)
        _write(item + b"/share/doc/LICENSE.bin", SHARED, 0o555)
    odd = os.fsencode(store.fs(store.paths["libfoo"])) + b"/share/odd"
    os.makedirs(odd)
    for name in ODD_NAMES[::-1] if reverse else ODD_NAMES:
        _write(odd + b"/" + name, name, 0o444)
    return store


def _write(path: bytes, data: bytes, mode: int) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def copy_reversed(src: bytes, dest: bytes) -> None:
    """Copy SRC to DEST, each directory's entries created in reverse name order,
    so that the copies' inode numbers (and directory hash order) differ."""
    os.mkdir(dest)
    for name in sorted(os.listdir(src), reverse=True):
        s, d = os.path.join(src, name), os.path.join(dest, name)
        mode = os.lstat(s).st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISDIR(mode):
            copy_reversed(s, d)
        else:
            shutil.copyfile(s, d)
        if not stat.S_ISLNK(mode):
            os.chmod(d, stat.S_IMODE(mode))


def hardlink_duplicates(root: bytes) -> int:
    """As `nix-store --optimise`: regular files with the same contents and exec
    bit become hard links to one of them.  Returns how many were linked."""
    first: dict[tuple, bytes] = {}
    linked = 0
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            st_ = os.lstat(path)
            if not stat.S_ISREG(st_.st_mode):
                continue
            with open(path, "rb") as f:
                key = (hashlib.sha256(f.read()).digest(), bool(st_.st_mode & 0o100))
            if key in first:
                os.unlink(path)
                os.link(first[key], path)
                linked += 1
            else:
                first[key] = path
    return linked


def inodes(root: str) -> list[int]:
    return [os.lstat(os.path.join(folder, name)).st_ino
            for folder, dirs, files in sorted(os.walk(root)) for name in sorted(dirs + files)]


def build(tmp, variant: dict) -> dict:
    """Run the pipeline as VARIANT says; every output by format, as bytes (the
    OCI layout as {relative path: bytes})."""
    tmp.mkdir()
    return build_from(tmp, make_store(str(tmp / "root"), variant), variant)


def build_from(tmp, store: StoreFixture, variant: dict = BASELINE) -> dict:
    tmp.mkdir(exist_ok=True)
    graph = store.write_graph(str(tmp / "graph.refs"))
    out = tmp / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("SOURCE_DATE_EPOCH", "XDG_CACHE_HOME", "TZ", "LANG", "LANGUAGE", "LOCPATH", "PYTHONHASHSEED")
           and not k.startswith("LC_")}
    env.update(variant["env"])
    tar = f"{BIN}/layer-tar --root {store.root} -j 2"
    script = (
        f"set -eo pipefail; umask {variant['umask']:03o}; "
        f"{BIN}/closure-read --root {store.root} {graph} | {BIN}/layer-split > {tmp}/split.ndjson; "
        f"{tar} --blob-dir {tmp}/blobs-gzip < {tmp}/split.ndjson > {tmp}/gzip.ndjson; "
        f"{tar} --blob-dir {tmp}/blobs-zstd --compress zstd < {tmp}/split.ndjson > {tmp}/zstd.ndjson; "
        f"for fmt in docker-archive oci oci-archive; do "
        f"{BIN}/image-assemble --tag app:1 --format $fmt -o {out}/$fmt {tmp}/gzip.ndjson >/dev/null; done; "
        f"{BIN}/image-assemble --tag app:1 --format oci-archive -o {out}/zstd {tmp}/zstd.ndjson >/dev/null")
    cwd = {"tmp": tmp, "store": store.root}.get(variant["cwd"], variant["cwd"])
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    return {"inodes": inodes(store.root), "store": store,
            **{fmt: read_tree(out / fmt) if fmt == "oci" else (out / fmt).read_bytes() for fmt in FORMATS}}


def read_tree(root) -> dict[str, bytes]:
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


LOCALES = {"tr_TR.UTF-8": ("tr_TR", "UTF-8"), "de_DE.ISO-8859-1": ("de_DE", "ISO-8859-1")}


@pytest.fixture(scope="module")
def locales(tmp_path_factory) -> str:
    """A LOCPATH with a Turkish locale (its dotless i breaks case mapping) and
    a Latin-1 one (Python's file system encoding is then ISO-8859-1)."""
    from tests.support.clients import missing

    folder = tmp_path_factory.mktemp("locales")
    for name, (source, charset) in LOCALES.items():
        proc = subprocess.run(["localedef", "-i", source, "-f", charset, str(folder / name)], capture_output=True)
        if proc.returncode != 0:
            missing(f"localedef cannot make {name} (Debian's locales package): {proc.stderr.decode()[-200:]}")
    return str(folder)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return build(tmp_path_factory.mktemp("det") / "baseline", BASELINE)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_same_bytes_whatever_the_environment(baseline, tmp_path, name, request):
    variant = {**BASELINE, **VARIANTS[name]}
    if variant["env"].get("LC_ALL") in LOCALES:
        variant["env"] = {**variant["env"], "LOCPATH": request.getfixturevalue("locales")}
        check = subprocess.run(["python3", "-c", "import locale, sys; locale.setlocale(locale.LC_ALL, ''); "
                                "print(sys.getfilesystemencoding())"], env={**os.environ, **variant["env"]},
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr  # the locale is really there
        assert (check.stdout.strip() == "iso8859-1") == ("ISO" in name)
    built = build(tmp_path / "variant", variant)
    problems = [f"{fmt}: {diff}" for fmt in FORMATS if (diff := image_difference(baseline[fmt], built[fmt]))]
    assert not problems, f"{name} changed the image:\n" + "\n".join(problems)


def test_the_variants_change_what_they_say(baseline, tmp_path):
    """Not vacuous: the reversed copy has other inode numbers in another order,
    and the optimised store really shares inodes."""
    copied = build(tmp_path / "copy", {**BASELINE, **VARIANTS["reversed inode order"]})
    assert copied["inodes"] != baseline["inodes"]
    assert sorted(copied["inodes"]) != copied["inodes"] or sorted(baseline["inodes"]) != baseline["inodes"]
    shared = make_store(str(tmp_path / "linked"), {**BASELINE, **VARIANTS["hard-linked duplicates"]})
    libfoo = os.path.join(shared.fs(shared.paths["libfoo"]), "share/doc/LICENSE")
    glibc = os.path.join(shared.fs(shared.paths["glibc"]), "share/doc/LICENSE")
    assert os.stat(libfoo).st_ino == os.stat(glibc).st_ino and os.stat(libfoo).st_nlink == 4


def test_hard_links_are_written_as_files_in_every_layer(baseline):
    """layer-tar(1): no hard-link entries; each name holds the whole file, so a
    layer does not depend on which other names share the inode."""
    import io
    import tarfile

    seen = 0
    with tarfile.open(fileobj=io.BytesIO(baseline["docker-archive"])) as image:
        for member in image:
            plain = _plain(image.extractfile(member).read()) if member.isreg() else None
            if plain is None:
                continue
            with tarfile.open(fileobj=io.BytesIO(plain)) as layer:
                for entry in layer:
                    assert not entry.islnk(), entry.name
                    if entry.name.endswith("share/doc/LICENSE"):
                        assert layer.extractfile(entry).read() == SHARED
                        seen += 1
    assert seen == 4


def test_a_difference_is_shown_as_the_first_differing_entry(baseline, tmp_path):
    """The control: the same store with one file changed gives other bytes in
    every format, and the report names that file inside its layer."""
    store = make_store(str(tmp_path / "root"), BASELINE)
    app = os.path.join(store.fs(store.paths["app"]), "bin/app")
    with open(app, "rb") as f:
        text = f.read()
    os.chmod(app, 0o755)
    with open(app, "wb") as f:
        f.write(text.replace(b"echo v1", b"echo v9"))  # the same size: only the contents differ
    os.chmod(app, 0o555)
    changed = build_from(tmp_path / "changed", store)
    for fmt in FORMATS:
        diff = image_difference(baseline[fmt], changed[fmt])
        assert diff and re.fullmatch(r"layer \d+ > gnu/store/\w{32}-app-v1/bin/app: contents differ "
                                     r"\(\d+ and \d+ bytes, first differing at byte \d+\)", diff), f"{fmt}: {diff}"
    assert image_difference(baseline["oci"], dict(baseline["oci"])) is None
