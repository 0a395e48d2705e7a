"""image-assemble --format oci adding to an existing layout: what stays, what
goes, what is refused, and writers that run at the same time."""
import json
import os
import subprocess

from conftest import BIN, run_stage
from tests.support import images
from tests.test_errors import fails, leftovers, tarred  # noqa: F401 (a fixture)


def ref_names(layout) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    return [d.get("annotations", {}).get("org.opencontainers.image.ref.name") for d in index["manifests"]]


def test_concurrent_writers_all_land(tarred, tmp_path):
    layout = tmp_path / "images"
    run_stage("image-assemble", "-f", "oci", "--tag", "first:1", "-o", str(layout), input=tarred["gzip"])
    procs = [subprocess.Popen([f"{BIN}/image-assemble", "-f", "oci", "--tag", f"w{i}:1", "-e", f"N={i}",
                               "-o", str(layout)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for i in range(4)]
    for proc in procs:
        proc.stdin.write(tarred["gzip"])
        proc.stdin.close()
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    assert sorted(ref_names(layout)) == ["first:1", "w0:1", "w1:1", "w2:1", "w3:1"]
    assert leftovers(tmp_path) == ["images"]


def test_foreign_layout_keeps_its_images_and_files(tarred, tmp_path):
    """A layout another tool wrote: its unnamed entry, extra file and blobs stay."""
    layout = tmp_path / "layout"
    made = images.oci_layout(layout, [images.tar_bytes(("file", "x", b"x"))], names=())
    (layout / "README").write_text("mine")
    run_stage("image-assemble", "-f", "oci", "--tag", "app:1", "-o", str(layout), input=tarred["gzip"])
    assert ref_names(layout) == [None, "app:1"]
    assert (layout / "README").read_text() == "mine"
    for desc in (made["manifest"], made["config"], *made["layers"]):
        assert (layout / "blobs/sha256" / desc["digest"][7:]).is_file()


def test_invalid_layout_is_refused_and_left_alone(tarred, tmp_path):
    layout = tmp_path / "layout"
    images.oci_layout(layout, [images.tar_bytes(("file", "x", b"x"))])
    (layout / "index.json").write_text("{not json")
    before = sorted((str(p), p.stat().st_mtime_ns) for p in layout.rglob("*"))
    message = fails("image-assemble", "-f", "oci", "-o", str(layout), input=tarred["gzip"])
    assert message.startswith(f"{layout}: not a valid OCI image layout: index.json: ")
    assert sorted((str(p), p.stat().st_mtime_ns) for p in layout.rglob("*")) == before
    assert leftovers(tmp_path) == ["layout"]


def test_old_files_are_never_written_through_their_links(tarred, tmp_path):
    """The new layout links the old one's files; rewriting oci-layout must
    not change the old inode (a reader may still hold it)."""
    layout = tmp_path / "layout"
    images.oci_layout(layout, [images.tar_bytes(("file", "x", b"x"))])
    (layout / "oci-layout").write_text('{ "imageLayoutVersion": "1.0.0" }\n')
    old = os.open(layout / "oci-layout", os.O_RDONLY)
    try:
        run_stage("image-assemble", "-f", "oci", "--tag", "b1:1", "-o", str(layout), input=tarred["gzip"])
        assert os.pread(old, 100, 0) == b'{ "imageLayoutVersion": "1.0.0" }\n'
    finally:
        os.close(old)
    assert (layout / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    assert ref_names(layout) == ["base:1", "b1:1"]
