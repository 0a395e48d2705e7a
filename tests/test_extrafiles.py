"""extrafiles: the top layer with /tmp and the --symlink links."""
import io
import tarfile

import pytest

from layerpipe.errors import UsageError
from layerpipe.extrafiles import parse_symlink, top_layer_tar

PROFILE = "/gnu/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-profile"


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


@pytest.mark.parametrize("spec, want", [
    ("/bin=bin", ("bin", f"{PROFILE}/bin")),
    ("/usr/bin/env=bin/env", ("usr/bin/env", f"{PROFILE}/bin/env")),
    ("/bin/=bin", ("bin", f"{PROFILE}/bin")),
    ("/etc/ssl=/gnu/store/x/etc/ssl", ("etc/ssl", "/gnu/store/x/etc/ssl")),
    ("/a=b=c", ("a", f"{PROFILE}/b=c")),
])
def test_parse_symlink(spec, want):
    assert parse_symlink(spec, PROFILE) == want


@pytest.mark.parametrize("spec", ["bin=bin", "/bin", "/bin=", "=bin", "/a/../b=x", "/a//b=x", "/./a=x", "/=x"])
def test_parse_symlink_refuses(spec):
    with pytest.raises(UsageError, match="--symlink"):
        parse_symlink(spec, PROFILE)


def test_relative_target_needs_a_profile():
    with pytest.raises(UsageError, match="exactly one root"):
        parse_symlink("/bin=bin", None)
    assert parse_symlink("/bin=/abs/bin", None) == ("bin", "/abs/bin")


def test_top_layer_has_tmp_sticky_and_world_writable():
    [tmp] = members(top_layer_tar([], 1))
    assert tmp.name == "tmp" and tmp.isdir() and tmp.mode == 0o1777
    assert (tmp.uid, tmp.gid, tmp.uname, tmp.gname, tmp.mtime) == (0, 0, "", "", 1)


def test_top_layer_with_links_parents_and_order():
    data = top_layer_tar([("usr/bin/env", "/x/env"), ("bin", "/x/bin"), ("usr/lib64", "/x/lib")], 1700000000)
    got = [(m.name, m.type, m.mode, m.linkname, m.mtime) for m in members(data)]
    assert got == [
        ("bin", tarfile.SYMTYPE, 0o777, "/x/bin", 1700000000),
        ("tmp", tarfile.DIRTYPE, 0o1777, "", 1700000000),
        ("usr", tarfile.DIRTYPE, 0o755, "", 1700000000),
        ("usr/bin", tarfile.DIRTYPE, 0o755, "", 1700000000),
        ("usr/bin/env", tarfile.SYMTYPE, 0o777, "/x/env", 1700000000),
        ("usr/lib64", tarfile.SYMTYPE, 0o777, "/x/lib", 1700000000),
    ]


def test_top_layer_is_sorted_depth_first_by_name_bytes():
    # "a/b" sorts before "a.b" as its parent "a" does: parents come before their contents.
    names = [m.name for m in members(top_layer_tar([("a.b", "/t"), ("a/b", "/t"), ("a-c", "/t")], 1))]
    assert names == ["a", "a/b", "a-c", "a.b", "tmp"]


def test_top_layer_does_not_depend_on_option_order():
    links = [("bin", "/x/bin"), ("usr/bin/env", "/x/env"), ("etc/ssl", "/x/ssl")]
    assert top_layer_tar(links, 1) == top_layer_tar(list(reversed(links)), 1)
    assert top_layer_tar(links, 1) != top_layer_tar(links, 2)


def test_symlink_inside_tmp_keeps_tmp_mode():
    got = {m.name: m.mode for m in members(top_layer_tar([("tmp/x", "/y")], 1))}
    assert got == {"tmp": 0o1777, "tmp/x": 0o777}


@pytest.mark.parametrize("links", [
    [("tmp", "/x")],
    [("bin", "/x"), ("bin", "/y")],
    [("bin", "/x"), ("bin/sh", "/y")],
    [("bin/sh", "/y"), ("bin", "/x")],
])
def test_clashing_links_are_refused(links):
    with pytest.raises(UsageError, match="--symlink"):
        top_layer_tar(links, 1)


def test_top_layer_ends_with_two_zero_blocks_only():
    data = top_layer_tar([], 1)
    assert len(data) == 3 * 512 and data[512:] == bytes(1024)
