"""nar.nar_size and nar.nar_hash against the real thing: `nix-store --dump PATH`
(its length, its sha256) and `nix-hash --type sha256 --base32 PATH`.

nix-store from Debian's nix-bin dumps any directory, no store needed.  Without
it the comparisons are skipped, unless CI is set: then they fail.
"""
import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from layerpipe.errors import LayerpipeError
from layerpipe.nar import nar_hash, nar_size
from layerpipe.storepath import nix32_encode

NIX_STORE = shutil.which("nix-store")
NIX_HASH = shutil.which("nix-hash")


def dumped_size(path) -> int:
    if not NIX_STORE:
        if os.environ.get("CI"):
            pytest.fail("nix-store (nix-bin) is missing and CI is set")
        pytest.skip("nix-store (nix-bin) not installed")
    proc = subprocess.run([NIX_STORE, "--dump", str(path)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return len(proc.stdout)


def write(path, data: bytes, mode: int = 0o444) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "item"
    write(root / "bin" / "tool", b"#!/bin/sh\necho hi\n", 0o555)
    write(root / "bin" / "tool-rw", b"x" * 13, 0o755)
    write(root / "lib" / "libx.so.1", bytes(range(256)) * 33, 0o555)
    os.symlink("libx.so.1", root / "lib" / "libx.so")
    os.symlink("/gnu/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-other/" + "t" * 150, root / "lib" / "far")
    write(root / "share" / "doc" / "a" / "b" / "c" / "deep.txt", b"deep\n")
    write(root / "share" / "empty", b"")
    write(root / "share" / "seven", b"1234567")
    write(root / "share" / "eight", b"12345678")
    write(root / "share" / ("n" * 120), b"long name")
    write(root / "share" / "caf\u00e9", "d\u00e9j\u00e0".encode())
    (root / "share" / "emptydir").mkdir()
    os.link(root / "share" / "seven", root / "share" / "seven-again")
    return root


def test_tree_matches_nix_store_dump(tree):
    assert nar_size(str(tree)) == dumped_size(tree)


def test_subtrees_match(tree):
    for sub in ("bin", "lib", "share", "share/emptydir"):
        assert nar_size(str(tree / sub)) == dumped_size(tree / sub), sub


def test_single_file_item(tmp_path):
    for size, mode in ((0, 0o444), (1, 0o555), (8, 0o444), (4097, 0o555)):
        path = tmp_path / f"f{size}"
        write(path, b"z" * size, mode)
        assert nar_size(str(path)) == dumped_size(path), (size, oct(mode))


def test_symlink_item_is_not_followed(tmp_path):
    target = tmp_path / "big"
    write(target, b"b" * 10000)
    link = tmp_path / "link"
    os.symlink(str(target), link)
    assert nar_size(str(link)) == dumped_size(link)
    assert nar_size(str(link)) < 1000


def test_non_utf8_names(tmp_path):
    root = tmp_path / "item"
    root.mkdir()
    with open(os.path.join(os.fsencode(root), b"bad\xff"), "wb") as f:
        f.write(b"x")
    os.symlink(b"\xfe\xff", os.path.join(os.fsencode(root), b"link\xfe"))
    assert nar_size(str(root)) == dumped_size(root)


def _str(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data + b"\0" * (-len(data) % 8)


def serialise(path: bytes) -> bytes:
    """A NAR written out by the book (Nix's archive.cc), as an oracle that
    needs no nix-store: owner exec bit only, entries sorted by name bytes."""
    st = os.lstat(path)
    out = [_str(b"("), _str(b"type")]
    if stat.S_ISREG(st.st_mode):
        out.append(_str(b"regular"))
        if st.st_mode & stat.S_IXUSR:
            out += [_str(b"executable"), _str(b"")]
        with open(path, "rb") as f:
            out += [_str(b"contents"), _str(f.read())]
    elif stat.S_ISLNK(st.st_mode):
        out += [_str(b"symlink"), _str(b"target"), _str(os.readlink(path))]
    else:
        out.append(_str(b"directory"))
        for name in sorted(os.listdir(path)):
            out += [_str(b"entry"), _str(b"("), _str(b"name"), _str(name), _str(b"node"),
                    serialise(os.path.join(path, name)), _str(b")")]
    return b"".join(out + [_str(b")")])


def test_sizes_match_an_independent_serialiser(tree):
    """Runs without nix-store too; and pins the oracle to nix-store where it is."""
    nar = _str(b"nix-archive-1") + serialise(os.fsencode(tree))
    assert nar_size(str(tree)) == len(nar)
    if NIX_STORE:
        assert subprocess.run([NIX_STORE, "--dump", str(tree)], capture_output=True).stdout == nar


def test_empty_regular_file_sizes():
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f")
        open(path, "wb").close()
        os.chmod(path, 0o444)
        assert nar_size(path) == 112  # 24 header + ( type regular contents "" ) = 7 strings
        os.chmod(path, 0o555)
        assert nar_size(path) == 144  # + "executable" (24) and "" (8)


def test_special_file_is_refused(tmp_path):
    root = tmp_path / "item"
    root.mkdir()
    os.mkfifo(root / "fifo")
    with pytest.raises(LayerpipeError, match="special file"):
        nar_size(str(root))


def test_group_or_other_exec_bit_alone_is_not_executable(tmp_path):
    """Nix (and tarwriter) look at the owner's exec bit only."""
    root = tmp_path / "item"
    write(root / "g", b"abc", 0o654)   # rw-r-xr--: group may execute, owner not
    write(root / "o", b"abc", 0o645)   # rw-r--r-x
    assert nar_size(str(root)) == dumped_size(root)


# -- nar_hash ------------------------------------------------------------------

def dumped_hash(path) -> str:
    dumped_size(path)  # skips (or fails under CI) without nix-store
    proc = subprocess.run([NIX_STORE, "--dump", str(path)], capture_output=True, timeout=60)
    return "sha256:" + hashlib.sha256(proc.stdout).hexdigest()


def test_hash_matches_nix_store_dump(tree):
    for sub in ("", "bin", "lib", "lib/far", "share", "share/emptydir", "share/seven"):
        assert nar_hash(str(tree / sub)) == (dumped_hash(tree / sub), dumped_size(tree / sub)), sub


def test_hash_matches_nix_hash_base32(tree):
    if not NIX_HASH:
        pytest.skip("nix-hash (nix-bin) not installed") if not os.environ.get("CI") else pytest.fail("no nix-hash")
    printed = subprocess.run([NIX_HASH, "--type", "sha256", "--base32", str(tree)], capture_output=True,
                             text=True, check=True).stdout.strip()
    digest = bytes.fromhex(nar_hash(str(tree))[0][7:])
    assert nix32_encode(digest) == printed


def test_hash_matches_an_independent_serialiser(tree, tmp_path):
    """Runs without nix-store too: a file bigger than one read chunk, non-UTF-8 names."""
    big = tree / "share" / "big"
    write(big, bytes(range(251)) * 9000, 0o555)  # > 1 MiB, and not a multiple of 8
    with open(os.path.join(os.fsencode(tree), b"bad\xff"), "wb") as f:
        f.write(b"x")
    nar = _str(b"nix-archive-1") + serialise(os.fsencode(tree))
    assert nar_hash(str(tree)) == ("sha256:" + hashlib.sha256(nar).hexdigest(), len(nar))


def test_hash_refuses_special_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(LayerpipeError, match="special file"):
        nar_hash(str(tmp_path))
