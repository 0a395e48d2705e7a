"""tarwriter: deterministic tars of store items, checked by independent readers
(Python's tarfile, GNU tar) and by a property test over how a tree was made."""
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from layerpipe.errors import LayerpipeError
from layerpipe.tarwriter import BLOCK, CHUNK, TarWriter, _header, add_tree, parent_dirs

GNU_TAR = shutil.which("tar")


def tar_tree(fs_path, name: bytes = b"item", mtime: int = 1, **kw) -> bytes:
    chunks: list[bytes] = []
    tar = TarWriter(chunks.append, mtime)
    add_tree(tar, os.fsencode(fs_path), name, **kw)
    tar.close()
    return b"".join(chunks)


def read_members(data: bytes) -> list[tuple[bytes, tarfile.TarInfo, bytes | None]]:
    """(name as bytes, member, contents) for every entry, through Python's tarfile."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar:
            body = tar.extractfile(m).read() if m.isreg() else None
            out.append((m.name.encode("utf-8", "surrogateescape"), m, body))
    return out


# -- a tree described as data --------------------------------------------------
# A node is bytes (a file), ("exec", bytes), ("link", target bytes) or a dict
# {name bytes: node} (a directory).

def flatten(node, prefix: bytes = b"") -> list[tuple[bytes, object]]:
    """(relative path, node) for every entry below a directory, depth first, sorted."""
    out = []
    for name in sorted(node):
        path = prefix + name
        out.append((path, node[name]))
        if isinstance(node[name], dict):
            out += flatten(node[name], path + b"/")
    return out


def create(root: bytes, node: dict) -> None:
    os.makedirs(root, exist_ok=True)
    for path, child in flatten(node):
        create_entry(os.path.join(root, path), child)


def create_entry(path: bytes, node) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(node, dict):
        os.makedirs(path, exist_ok=True)
    elif isinstance(node, tuple) and node[0] == "link":
        os.symlink(node[1], path)
    else:
        exe = isinstance(node, tuple)
        with open(path, "wb") as f:
            f.write(node[1] if exe else node)
        os.chmod(path, 0o755 if exe else 0o644)


def expected(node: dict, name: bytes = b"item") -> list[tuple]:
    """What the tar must hold, from the description alone: (name, type, mode, link, contents)."""
    out = [(name + b"/", tarfile.DIRTYPE, 0o555, b"", None)]
    for path, child in flatten(node):
        full = name + b"/" + path
        if isinstance(child, dict):
            out.append((full + b"/", tarfile.DIRTYPE, 0o555, b"", None))
        elif isinstance(child, tuple) and child[0] == "link":
            out.append((full, tarfile.SYMTYPE, 0o777, child[1], None))
        elif isinstance(child, tuple):
            out.append((full, tarfile.REGTYPE, 0o555, b"", child[1]))
        else:
            out.append((full, tarfile.REGTYPE, 0o444, b"", child))
    return out


def actual(data: bytes) -> list[tuple]:
    got = []
    for name, m, body in read_members(data):
        name = name + b"/" if m.isdir() else name
        got.append((name, m.type, m.mode, m.linkname.encode("utf-8", "surrogateescape"), body))
    return got


RICH = {
    b"bin": {b"tool": ("exec", b"#!/bin/sh\necho hi\n"), b"sh": ("link", b"tool")},
    b"lib": {b"libx.so.1": ("exec", bytes(range(256)) * 40), b"libx.so": ("link", b"libx.so.1"),
             b"far": ("link", b"/gnu/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-other/" + b"t" * 150)},
    b"share": {
        b"empty": b"",
        b"emptydir": {},
        b"n" * 100: b"exactly 100 bytes of name below share/",
        b"m" * 101: b"101",
        b"caf\xc3\xa9": "d\u00e9j\u00e0 vu".encode(),
        b"\xe6\x97\xa5\xe6\x9c\xac": b"nihon",
        b"bad\xff\xfe": b"not utf-8",
        b"badlink": ("link", b"\xff\xfe"),
        b"utf8link": ("link", "caf\u00e9".encode()),
        b"block": b"b" * BLOCK,
        b"block+1": b"c" * (BLOCK + 1),
    },
    b"a": {b"b": b"", b"c": {}},
    b"a.b": b"sorts after a/ and its contents",
    b"a-b": b"sorts between a and a.b",
}
DEEP = {(b"d" * 200): {(b"e" * 200): {(b"f" * 200): {b"leaf": b"deep"}}}}


@pytest.fixture
def rich(tmp_path):
    root = os.fsencode(tmp_path / "item")
    create(root, RICH)
    return root


def test_round_trip_through_python_tarfile(rich):
    assert actual(tar_tree(rich)) == expected(RICH)


def test_four_thousand_byte_names(tmp_path):
    root = os.fsencode(tmp_path / "item")
    create(root, DEEP)
    prefix = b"p" * 3400
    got = actual(tar_tree(root, name=prefix))
    assert got == expected(DEEP, name=prefix)
    assert max(len(n) for n, *_ in got) > 4000


def test_names_over_100_bytes_and_not_ascii_use_pax(rich):
    data = tar_tree(rich)
    headers = [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)]
    pax = [h for h in headers if h[156:157] == b"x" and h[257:263] == b"ustar\0"]
    # only where ustar cannot hold the value: two long names, a long link target,
    # three non-ASCII names, two non-ASCII link targets
    assert len(pax) == 8
    assert all(h[:14] == b"././@PaxHeader" for h in pax)
    assert b"hdrcharset=BINARY" in data   # only for the names that are not UTF-8


def test_fields_are_fixed_whatever_the_files_say(rich):
    for name, m, _ in read_members(tar_tree(rich, mtime=1234567890)):
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", ""), name
        assert (m.devmajor, m.devminor, m.mtime) == (0, 0, 1234567890), name


def test_archive_ends_with_exactly_two_zero_blocks(rich):
    data = tar_tree(rich)
    assert len(data) % BLOCK == 0
    assert data.endswith(bytes(2 * BLOCK)) and data[-3 * BLOCK:-2 * BLOCK] != bytes(BLOCK)


def test_ustar_magic_and_checksums(rich):
    data = tar_tree(rich)
    for name, m, _ in read_members(data):  # tarfile checks every checksum
        header = data[m.offset:m.offset + BLOCK]
        assert header[257:265] == b"ustar\x0000", name
        assert header[265:297] == bytes(32) and header[297:329] == bytes(32), name  # no uname/gname


def test_hard_links_are_written_in_full(tmp_path):
    root = tmp_path / "item"
    root.mkdir()
    (root / "a").write_bytes(b"same")
    os.link(root / "a", root / "b")
    members = read_members(tar_tree(root))
    assert [(n, m.type, body) for n, m, body in members] == [
        (b"item", tarfile.DIRTYPE, None), (b"item/a", tarfile.REGTYPE, b"same"), (b"item/b", tarfile.REGTYPE, b"same")]


@pytest.mark.parametrize("on_disk, in_tar", [
    (0o755, 0o555), (0o744, 0o555), (0o700, 0o555), (0o500, 0o555), (0o555, 0o555),
    (0o644, 0o444), (0o600, 0o444), (0o444, 0o444), (0o400, 0o444), (0o455, 0o444), (0o677, 0o444),
    (0o4755, 0o555), (0o2644, 0o444), (0o1644, 0o444),
])
def test_file_mode_follows_owner_exec_bit_only(tmp_path, on_disk, in_tar):
    root = tmp_path / "item"
    root.mkdir()
    (root / "f").write_bytes(b"x")
    os.chmod(root / "f", on_disk)
    members = read_members(tar_tree(root))
    assert members[1][1].mode == in_tar


@pytest.mark.parametrize("on_disk", [0o700, 0o755, 0o777, 0o1777, 0o2755, 0o500])
def test_directory_mode_is_0555(tmp_path, on_disk):
    root = tmp_path / "item"
    (root / "d").mkdir(parents=True)
    os.chmod(root / "d", on_disk)
    try:
        modes = [m.mode for _, m, _ in read_members(tar_tree(root))]
    finally:
        os.chmod(root / "d", 0o755)
    assert modes == [0o555, 0o555]


def test_symlinks_are_0777_and_never_followed(tmp_path):
    root = tmp_path / "item"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"s")
    os.symlink(tmp_path / "outside", root / "dirlink")
    os.symlink("missing", root / "dangling")
    got = [(n, m.type, m.mode, m.linkname) for n, m, _ in read_members(tar_tree(root))]
    assert got == [(b"item", tarfile.DIRTYPE, 0o555, ""),
                   (b"item/dangling", tarfile.SYMTYPE, 0o777, "missing"),
                   (b"item/dirlink", tarfile.SYMTYPE, 0o777, str(tmp_path / "outside"))]


def test_store_item_that_is_a_file_or_a_link(tmp_path):
    (tmp_path / "f").write_bytes(b"just a file")
    os.chmod(tmp_path / "f", 0o555)
    os.symlink("f", tmp_path / "l")
    assert [(n, m.mode, b) for n, m, b in read_members(tar_tree(tmp_path / "f", name=b"gnu/store/x-f"))] == \
        [(b"gnu/store/x-f", 0o555, b"just a file")]
    assert [(n, m.linkname) for n, m, _ in read_members(tar_tree(tmp_path / "l", name=b"gnu/store/x-l"))] == \
        [(b"gnu/store/x-l", "f")]


def test_entries_are_depth_first_sorted_by_name_bytes_parents_first(rich):
    names = [n for n, _, _ in read_members(tar_tree(rich))]
    for i, name in enumerate(names):
        parent = name.rpartition(b"/")[0]
        if parent:
            assert parent in names[:i], f"{name!r} before its directory"
    # siblings in byte order; a directory's contents right after it
    assert names.index(b"item/a") < names.index(b"item/a/b") < names.index(b"item/a/c") \
        < names.index(b"item/a-b") < names.index(b"item/a.b") < names.index(b"item/bin")
    share = [n for n in names if n.startswith(b"item/share/") and n.count(b"/") == 2]
    assert share == sorted(share)
    assert b"item/share/bad\xff\xfe" < b"item/share/caf\xc3\xa9"  # bytes, not code points or locale


def test_parent_dirs():
    assert parent_dirs("/gnu/store/abc-x") == [b"gnu", b"gnu/store"]
    assert parent_dirs("/nix/store/abc-x") == [b"nix", b"nix/store"]
    assert parent_dirs("/opt/my/store/abc-x") == [b"opt", b"opt/my", b"opt/my/store"]


# -- refusals -------------------------------------------------------------------

def test_fifo_is_refused(tmp_path):
    root = tmp_path / "item"
    root.mkdir()
    os.mkfifo(root / "fifo")
    with pytest.raises(LayerpipeError, match="special file") as info:
        tar_tree(root)
    assert str(root / "fifo") in str(info.value)


def test_socket_is_refused(tmp_path):
    import socket
    root = tmp_path / "item"
    root.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
        with pytest.raises(LayerpipeError, match="special file"):
            tar_tree(root)
    finally:
        sock.close()


@pytest.mark.parametrize("change", ["grow", "shrink"])
def test_file_changing_size_while_read_is_refused(tmp_path, change):
    root = tmp_path / "item"
    root.mkdir()
    victim = root / "big"
    victim.write_bytes(b"v" * (3 * CHUNK))
    calls = []

    def on_bytes(n):
        if not calls:  # after the first chunk: the file changes under the reader
            if change == "grow":
                with open(victim, "ab") as f:
                    f.write(b"more")
            else:
                os.truncate(victim, CHUNK + CHUNK // 2)
        calls.append(n)

    with pytest.raises(LayerpipeError, match="changed size") as info:
        tar_tree(root, on_bytes=on_bytes)
    assert str(victim) in str(info.value)


def test_small_file_growing_after_it_was_read_is_refused(tmp_path):
    """A small file is read in one call of its size plus one byte, then one
    more: bytes appended in between are noticed."""
    root = tmp_path / "item"
    root.mkdir()
    victim = root / "small"
    victim.write_bytes(b"0123456789")

    def on_bytes(n):
        with open(victim, "ab") as f:
            f.write(b"!")

    with pytest.raises(LayerpipeError, match="changed size"):
        tar_tree(root, on_bytes=on_bytes)


@pytest.mark.parametrize("fill", [0x00, 0x7F, 0xFF])
def test_header_checksum_is_the_byte_sum(fill):
    """The checksum (computed with Adler-32 halves) is the plain sum of the
    header's bytes, its own field read as spaces, up to the largest sums."""
    name, link = bytes([fill or 1]) * 100, bytes([fill]) * 100
    header = _header(name, 0o7777, 0o77777777777, 0o77777777777, bytes([fill or 0x30]), link)
    expected = sum(header[:148]) + 8 * 0x20 + sum(header[156:])
    assert header[148:156] == b"%06o\0 " % expected


@pytest.mark.parametrize("name, target", [
    ("caf\u00e9", "a\tb"),                       # non-ASCII name, target with a tab
    ("tab\there", "/gnu/store/" + "t" * 120),     # name with a tab, long target
    ("n" * 120, "new\nline"),
])
def test_control_characters_survive_beside_pax(tmp_path, name, target):
    """A value that fits ustar is written as it is, even when the other one
    needs a PAX record (whose stand-in in the ustar header is lossy)."""
    root = tmp_path / "item"
    root.mkdir()
    os.symlink(target, root / name)
    [(got_name, member, _)] = read_members(tar_tree(root))[1:]
    assert (got_name.decode(), member.linkname) == (f"item/{name}", target)


def test_control_characters_in_plain_ustar_fields(tmp_path):
    root = tmp_path / "item"
    root.mkdir()
    os.symlink("a\tb", root / "x\ny")
    (root / "f\x01").write_bytes(b"1")
    got = [(n, m.linkname) for n, m, _ in read_members(tar_tree(root))[1:]]
    assert got == [(b"item/f\x01", ""), (b"item/x\ny", "a\tb")]


def test_add_file_refuses_wrong_amounts():
    tar = TarWriter(lambda b: None, 1)
    with pytest.raises(LayerpipeError, match="changed size"):
        tar.add_file(b"f", 0o444, 10, iter([b"12345"]))
    with pytest.raises(LayerpipeError, match="changed size"):
        tar.add_file(b"f", 0o444, 3, iter([b"12345"]))


def test_should_stop_stops(rich):
    with pytest.raises(LayerpipeError, match="stopped"):
        tar_tree(rich, should_stop=lambda: True)


def test_on_bytes_counts_file_contents(rich):
    counted = []
    tar_tree(rich, on_bytes=counted.append)
    assert sum(counted) == sum(len(body) for *_, body in expected(RICH) if body is not None)


# -- sizes beyond ustar's 8 GiB, streamed without writing them anywhere -------------

class Head:
    """A sink that keeps the first blocks and counts the rest."""

    def __init__(self):
        self.head, self.total = bytearray(), 0

    def __call__(self, data):
        if len(self.head) < 4 * BLOCK:
            self.head += bytes(data[:4 * BLOCK])
        self.total += len(data)


@pytest.mark.parametrize("size, pax", [(0o77777777777, False), (0o77777777777 + 1, True)])
def test_sizes_of_8_gib_and_more_use_pax(size, pax):
    sink = Head()
    tar = TarWriter(sink, 1)
    piece = memoryview(bytes(CHUNK))
    chunks = (piece[:min(CHUNK, size - off)] for off in range(0, size, CHUNK))
    tar.add_file(b"huge", 0o444, size, chunks)
    tar.close()
    headers = 3 if pax else 1  # PAX header, its one block of records, the ustar header
    assert sink.total == headers * BLOCK + size + (-size % BLOCK) + 2 * BLOCK
    assert (sink.head[156:157] == b"x") == pax
    with tarfile.open(fileobj=io.BytesIO(bytes(sink.head)), mode="r:") as reader:
        member = reader.firstmember
        assert member.name == "huge" and member.size == size


# -- GNU tar ------------------------------------------------------------------------

def need_gnu_tar():
    if not GNU_TAR:
        if os.environ.get("CI"):
            pytest.fail("tar is missing and CI is set")
        pytest.skip("GNU tar not installed")


def test_gnu_tar_lists_what_was_written(rich, tmp_path):
    need_gnu_tar()
    archive = tmp_path / "a.tar"
    archive.write_bytes(tar_tree(rich))
    proc = subprocess.run([GNU_TAR, "--quoting-style=escape", "-tvf", str(archive)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(expected(RICH))
    modes = {line.split()[5]: line.split()[0] for line in lines}
    assert modes["item/"] == "dr-xr-xr-x" and modes["item/bin/tool"] == "-r-xr-xr-x"
    assert modes["item/share/empty"] == "-r--r--r--" and modes["item/bin/sh"] == "lrwxrwxrwx"
    assert modes["item/share/bad\\377\\376"] == "-r--r--r--"
    assert all(line.split()[1] == "0/0" for line in lines)


def test_gnu_tar_extracts_the_same_tree(rich, tmp_path):
    need_gnu_tar()
    archive = tmp_path / "a.tar"
    archive.write_bytes(tar_tree(rich))
    dest = tmp_path / "out"
    dest.mkdir()
    proc = subprocess.run([GNU_TAR, "-xf", str(archive), "-C", str(dest)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    try:
        assert snapshot(os.fsencode(dest / "item")) == snapshot(rich)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(dest)])


def snapshot(root: bytes) -> list[tuple]:
    """A tree as (path, kind, owner-exec, contents or target), for comparing trees."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(folder, name)
            st_ = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st_.st_mode):
                out.append((rel, "link", None, os.readlink(path)))
            elif stat.S_ISDIR(st_.st_mode):
                out.append((rel, "dir", None, None))
            else:
                with open(path, "rb") as f:
                    out.append((rel, "file", bool(st_.st_mode & 0o100), f.read()))
    return sorted(out)


# -- the property: how a tree was made does not show in its tar -------------------------

NAMES = st.one_of(
    st.text("abcxyzAB019._-\u00e9\t\n", min_size=1, max_size=6).map(str.encode),
    st.sampled_from([b"\xff", b"caf\xc3\xa9", b"x" * 101, b"Z", b"a.b", b"a-b"]),
).filter(lambda n: n not in (b".", b".."))
TARGETS = st.binary(min_size=1, max_size=120).filter(lambda t: b"\0" not in t)
FILES = st.one_of(st.binary(max_size=300), st.tuples(st.just("exec"), st.binary(max_size=300)),
                  st.tuples(st.just("link"), TARGETS))
# Few distinct contents, so that equal files (hard-link candidates) are common.
FILES = st.one_of(FILES, st.sampled_from([b"same", ("exec", b"same"), b""]))
TREES = st.recursive(FILES, lambda kids: st.dictionaries(NAMES, kids, max_size=5), max_leaves=14)
ROOTS = st.dictionaries(NAMES, TREES, min_size=1, max_size=5)


def create_variant(root: bytes, node: dict, data) -> None:
    """Create NODE under ROOT as a different machine or person might have."""
    entries = flatten(node)
    order = data.draw(st.permutations(entries), label="creation order")
    umask = data.draw(st.sampled_from([0o000, 0o002, 0o022, 0o027, 0o077]), label="umask")
    hardlink = data.draw(st.booleans(), label="hard-link equal files")
    old = os.umask(umask)
    try:
        os.makedirs(root, exist_ok=True)
        first: dict = {}
        for path, child in order:
            full = os.path.join(root, path)
            key = child if isinstance(child, bytes) or (isinstance(child, tuple) and child[0] == "exec") else None
            if hardlink and key is not None and key in first:
                os.makedirs(os.path.dirname(full), exist_ok=True)
                os.link(first[key], full)
                continue
            create_entry(full, child)
            if key is not None:
                first[key] = full
    finally:
        os.umask(old)
    for path, child in order:  # permissions: all but the owner's exec bit are noise
        full = os.path.join(root, path)
        if isinstance(child, dict):
            os.chmod(full, 0o700 | data.draw(st.integers(0, 0o077), label="dir bits"))
        elif not (isinstance(child, tuple) and child[0] == "link"):
            noise = data.draw(st.integers(0, 0o277), label="file bits") & ~0o100
            os.chmod(full, 0o400 | noise | (0o100 if isinstance(child, tuple) else 0))
    for path, _ in order:  # time stamps last: creating children changes a directory's
        when = data.draw(st.integers(0, 2**31), label="mtime")
        os.utime(os.path.join(root, path), (when, when), follow_symlinks=False)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tree=ROOTS, data=st.data())
def test_same_tree_any_history_same_bytes(tree, data):
    with tempfile.TemporaryDirectory() as tmp:
        plain, variant = os.path.join(os.fsencode(tmp), b"plain"), os.path.join(os.fsencode(tmp), b"variant")
        create(plain, tree)
        create_variant(variant, tree, data)
        want = tar_tree(plain, mtime=7)
        assert actual(want) == expected(tree)
        assert tar_tree(variant, mtime=7) == want
