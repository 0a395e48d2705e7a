"""image-assemble --entrypoint: relative to the root profile, checked against the
image's own files (its layers, the --symlink links), symbolic links followed
inside the image only; a target the image lacks is refused with one line."""
import io
import json
import tarfile

import pytest

from conftest import run_stage
from tests.test_errors import fails, leftovers, tarred  # noqa: F401 (a fixture)

from layerpipe.imagetree import ImageTree, Layer


def _entrypoint(tarred, tmp_path, *args) -> list[str]:
    out = run_stage("image-assemble", "-o", str(tmp_path / "i.tar"), *args, input=tarred["gzip"]).stdout
    image = json.loads(out.splitlines()[-1])
    with tarfile.open(image["output"]) as tar:
        config = json.load(tar.extractfile("blobs/sha256/" + image["image_id"][7:]))
    return config["config"]["Entrypoint"]


def test_relative_entrypoint_follows_the_profile_link(tarred, tmp_path):
    profile = tarred["store"].paths["profile"]
    assert _entrypoint(tarred, tmp_path, "--entrypoint", "bin/app", "-A", "-v") == [f"{profile}/bin/app", "-v"]


def test_absolute_entrypoint_through_a_symlink_of_the_top_layer(tarred, tmp_path):
    assert _entrypoint(tarred, tmp_path, "-S", "/usr/bin=bin", "--entrypoint", "/usr/bin/app") == ["/usr/bin/app"]


def test_arguments_follow_in_order_with_an_absolute_entrypoint(tarred, tmp_path):
    app = tarred["store"].paths["app"]
    assert _entrypoint(tarred, tmp_path, "--entrypoint", f"{app}/bin/app", "-A", "--one", "--entrypoint-arg",
                       "two words", "-A", "-v") == [f"{app}/bin/app", "--one", "two words", "-v"]


def test_absolute_link_into_another_store_item(tarred, tmp_path):
    libfoo = tarred["store"].paths["libfoo"]  # lib/libc-link -> <glibc>/lib/libc.so.6 (0555)
    assert _entrypoint(tarred, tmp_path, "--entrypoint", f"{libfoo}/lib/libc-link") == [f"{libfoo}/lib/libc-link"]


@pytest.mark.parametrize("target, why", [
    ("bin/nope", "is not in the image"),
    ("bin", "is a directory"),
    ("manifest", "is not executable"),
    ("/bin/sh", "is not in the image"),  # the host has one; the image does not
    ("bin/app/x", "is not in the image"),
])
def test_missing_target_is_refused(tarred, tmp_path, target, why):
    message = fails("image-assemble", "--entrypoint", target, "-o", str(tmp_path / "i.tar"),
                    input=tarred["gzip"], status=2)
    assert message.startswith(f"--entrypoint {target}: ") and message.endswith(why)
    assert leftovers(tmp_path) == []


def _layer(members: list[tuple[str, str, str]]) -> Layer:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size, info.mode = len(value), 0o755
                tar.addfile(info, io.BytesIO(value.encode()))
    data = buf.getvalue()
    return Layer(lambda: io.BytesIO(data), None, "test")


def test_links_stay_inside_the_image():
    lower = _layer([("bin/sh", "file", "#!"), ("etc/os", "file", "lower")])
    upper = _layer([("./usr/bin/up", "link", "../../../../bin/sh"), ("loop", "link", "loop"),
                    ("etc/.wh.os", "file", ""), ("opt/x", "file", "hi")])
    tree = ImageTree([lower, upper], {"top": ("link", "/opt/x", 0o777)})
    assert tree.resolve("/usr/bin/up")[0] == "bin/sh"  # `..` stops at the image root
    assert tree.resolve("/loop") is None
    assert tree.resolve("/etc/os") is None  # whited out
    assert tree.read_file("/top") == b"hi"
    assert tree.read_file("/bin/sh") == b"#!"
