"""Builders and checks for the cases of tests/hostile/cases.json that need more
than bytes on stdin: special files, unreadable files, sparse 8 GiB files,
names no file system tool likes, a file that grows while it is read, hostile
base images and blobs.

A builder gets (tmp, shared, subs): the case's temp dir, the module's shared
store and tarred records (tests/test_hostile.py), and the substitutions so
far (`@A@`, `@root@`, ...); it makes what the case needs and returns more
substitutions (and, under "stdin", bytes to feed the command instead).  It
may return "cleanup", a callable run after the command.  A check gets
(proc, subs) after a command that had to succeed and asserts what correct
handling means for that case.
"""
from __future__ import annotations

import io
import json
import os
import socket
import stat
import tarfile
import threading

import pytest

from tests.support import images



def item(subs: dict, key: str = "A") -> str:
    """The file system path of store item KEY under the case's root."""
    return os.path.join(subs["root"], subs[key].lstrip("/"))


def _file(path: str, data: bytes = b"x\n", mode: int = 0o444) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _plain(subs: dict, key: str = "A") -> str:
    d = item(subs, key)
    _file(os.path.join(d, "bin", "tool"), b"#!/bin/sh\necho hi\n", 0o555)
    return d


# -- store items -----------------------------------------------------------------

def plain_item(tmp, shared, subs):
    _plain(subs)


def fifo_item(tmp, shared, subs):
    d = _plain(subs)
    os.mkfifo(os.path.join(d, "bin", "fifo"))


def socket_item(tmp, shared, subs):
    d = _plain(subs)
    sock = socket.socket(socket.AF_UNIX)
    here = os.getcwd()
    os.chdir(os.path.join(d, "bin"))  # a socket's path must fit in 108 bytes
    try:
        sock.bind("sock")
    finally:
        os.chdir(here)
    return {"cleanup": sock.close}


def device_item(tmp, shared, subs):
    d = _plain(subs)
    try:
        os.mknod(os.path.join(d, "bin", "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod of a character device is not permitted here (not root)")


def unreadable_file_item(tmp, shared, subs):
    d = _plain(subs)
    _file(os.path.join(d, "secret"), b"s3cret\n", 0o000)


def unreadable_dir_item(tmp, shared, subs):
    d = _plain(subs)
    os.makedirs(os.path.join(d, "locked", "inner"))
    _file(os.path.join(d, "locked", "inner", "f"))
    os.chmod(os.path.join(d, "locked"), 0o000)


def escaping_symlinks_item(tmp, shared, subs):
    """Links out of the store and into another item: kept as links, never followed."""
    d = _plain(subs)
    os.symlink("/etc/passwd", os.path.join(d, "passwd"))
    os.symlink("../../../../etc", os.path.join(d, "etc"))
    os.symlink(subs["B"] + "/bin/tool", os.path.join(d, "other"))
    _plain(subs, "B")


def item_is_symlink(tmp, shared, subs):
    """The store item itself is a link to /etc: the layer holds the link, not /etc."""
    os.makedirs(os.path.dirname(item(subs)), exist_ok=True)
    os.symlink("/etc", item(subs))


def item_is_file(tmp, shared, subs):
    """A store item may be a single file (a Guix `plain-file`)."""
    _file(item(subs), b"just a file\n")


def nonutf8_item(tmp, shared, subs):
    d = _plain(subs)
    name = os.path.join(os.fsencode(d), b"caf\xe9-\xff\xfe.txt")
    with open(name, "wb") as f:
        f.write(b"latin-1 name\n")
    os.symlink(b"target-\xe9", os.path.join(os.fsencode(d), b"link-\xe9"))


def long_name_item(tmp, shared, subs):
    """A file whose name inside the layer is 4,000 bytes (levels of up to 200),
    and a symlink target as long.  (The path on disk stays under PATH_MAX.)"""
    d = os.fsencode(_plain(subs))
    room = 4000 - len(subs["A"]) - len("/leaf")
    path, i = d, 0
    while room > 0:
        part = bytes([97 + i]) * min(200, room - 1)
        path, room, i = os.path.join(path, part), room - len(part) - 1, i + 1
    os.makedirs(path)
    with open(os.path.join(path, b"leaf"), "wb") as f:
        f.write(b"deep\n")
    os.symlink(b"x" * 4000, os.path.join(d, b"longlink"))
    return {"long_leaf": os.fsdecode(path[len(d):] + b"/leaf").lstrip("/")}


BIG = (8 << 30) + 4096


def sparse_item(tmp, shared, subs):
    """A sparse file of 8 GiB + 4 KiB: a PAX size record, ustar size 0."""
    d = _plain(subs)
    with open(os.path.join(d, "huge"), "wb") as f:
        f.truncate(BIG - 5)
        f.seek(0, os.SEEK_END)
        f.write(b"tail\n")


def newline_name_item(tmp, shared, subs):
    d = _plain(subs)
    _file(os.path.join(d, "two\nlines"), b"n\n")
    _file(os.path.join(d, "tab\tand space "), b"t\n")


def growing_item(tmp, shared, subs):
    """A file that another thread keeps appending to while layer-tar reads it."""
    d = _plain(subs)
    path = os.path.join(d, "log")
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    stop = threading.Event()

    def grow():
        with open(path, "ab") as f:
            while not stop.is_set():
                f.write(b"more\n" * 1000)
                f.flush()
    thread = threading.Thread(target=grow, daemon=True)
    thread.start()

    def cleanup():
        stop.set()
        thread.join()
    return {"cleanup": cleanup}


# -- layer records and blobs for image-assemble ------------------------------------------

def _first_layer(recs: list[dict]) -> dict:
    return next(r for r in recs if r["type"] == "layer")


def _ndjson(recs: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


def blob_symlink_to_passwd(tmp, shared, subs):
    """A blob dir whose blobs/sha256/<hex> is a link to /etc/passwd: the shape is
    right, the bytes are not the digest's."""
    recs = shared.records("gzip")
    layer = _first_layer(recs)
    folder = os.path.join(tmp, "evil", "blobs", "sha256")
    os.makedirs(folder)
    os.symlink("/etc/passwd", os.path.join(folder, layer["digest"][7:]))
    layer["blob"] = os.path.join(folder, layer["digest"][7:])
    return {"stdin": _ndjson(recs)}


def blob_dotdot(tmp, shared, subs):
    recs = shared.records("gzip")
    layer = _first_layer(recs)
    layer["blob"] = layer["blob"] + "/../../../../../../etc/passwd"
    return {"stdin": _ndjson(recs)}


def blob_is_directory(tmp, shared, subs):
    recs = shared.records("gzip")
    layer = _first_layer(recs)
    folder = os.path.join(tmp, "dir", "blobs", "sha256", layer["digest"][7:])
    os.makedirs(folder)
    layer["blob"] = folder
    return {"stdin": _ndjson(recs)}


def many_layers(tmp, shared, subs):
    """130 layer records, all naming the same (real) blob."""
    recs = shared.records("gzip")
    layer = _first_layer(recs)
    layers = [{**layer, "index": i} for i in range(130)]
    return {"stdin": _ndjson([recs[0], *layers])}


def duplicate_index(tmp, shared, subs):
    recs = shared.records("gzip")
    layers = [r for r in recs if r["type"] == "layer"]
    layers[1]["index"] = layers[0]["index"]
    return {"stdin": _ndjson(recs)}


# -- base images -------------------------------------------------------------------------

GOOD_TAR = images.tar_bytes(("dir", "bin"), ("file", "bin/tool", b"#!/bin/sh\n"))


def _base(tmp, tars: list[bytes], **kw) -> dict:
    root = os.path.join(tmp, "base")
    images.oci_layout(root, tars, **kw)
    return {"base": root}


def base_dotdot(tmp, shared, subs):
    return _base(tmp, [images.tar_bytes(("file", "../../etc/cron.d/evil", b"x"))])


def base_absolute(tmp, shared, subs):
    return _base(tmp, [images.tar_bytes(("file", "/etc/shadow", b"x"))])


def base_symlink_then_write(tmp, shared, subs):
    return _base(tmp, [images.tar_bytes(("sym", "usr", "/"), ("file", "usr/etc/passwd", b"x"))])


def base_hardlink_out(tmp, shared, subs):
    return _base(tmp, [images.tar_bytes(("link", "shadow", "/etc/shadow"))])


def empty_base(tmp, shared, subs):
    path = os.path.join(tmp, "base.tar")
    open(path, "wb").close()
    return {"base": path}


def base_tar_bomb(tmp, shared, subs):
    """A gzip layer of 1 GiB of zeros in one file: about 1 MiB stored, more than
    layerscan's BOMB_FLOOR (256 MiB) + 200 x its size uncompressed."""
    root = os.path.join(tmp, "base")
    size = 1 << 30
    raw = io.BytesIO()
    import gzip
    import hashlib
    diff = hashlib.sha256()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        info = tarfile.TarInfo("zeros")
        info.size = size
        header = info.tobuf(format=tarfile.USTAR_FORMAT)
        gz.write(header)
        diff.update(header)
        zeros = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            gz.write(zeros)
            diff.update(zeros)
        gz.write(b"\0" * 1024)
        diff.update(b"\0" * 1024)
    blob = raw.getvalue()
    os.makedirs(os.path.join(root, "blobs", "sha256"))
    digest = images.sha(blob)
    with open(os.path.join(root, "blobs", "sha256", digest[7:]), "wb") as f:
        f.write(blob)
    config = json.dumps(images.base_config(["sha256:" + diff.hexdigest()])).encode()
    cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": images.sha(config),
             "size": len(config)}
    with open(os.path.join(root, "blobs", "sha256", cdesc["digest"][7:]), "wb") as f:
        f.write(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": cdesc, "layers": [{"mediaType": images.LAYER_TYPES["gzip"],
                                                        "digest": digest, "size": len(blob)}]}).encode()
    with open(os.path.join(root, "blobs", "sha256", images.sha(manifest)[7:]), "wb") as f:
        f.write(manifest)
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                      "digest": images.sha(manifest), "size": len(manifest)}]}, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    return {"base": root}


def base_archive_member_dotdot(tmp, shared, subs):
    """A Docker archive whose manifest.json names a layer `../../etc/passwd`."""
    path = os.path.join(tmp, "base.tar")
    images.docker_archive(path, [GOOD_TAR])
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Layers"] = ["../../../../etc/passwd"]
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {"base": path}


def base_archive_absolute_member(tmp, shared, subs):
    """An archive whose own members include `/etc/evil` and `../evil`: ignored, never written."""
    path = os.path.join(tmp, "base.tar")
    images.docker_archive(path, [GOOD_TAR])
    with tarfile.open(path, "a") as tar:
        for name in ("/etc/evil", "../evil"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return {"base": path}


# -- checks after success -----------------------------------------------------------------

def _layer_tar(subs: dict, proc) -> tarfile.TarFile:
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    layer = _first_layer(recs)
    return tarfile.open(layer["blob"], "r:*")


def _members(subs, proc) -> dict[str, tarfile.TarInfo]:
    with _layer_tar(subs, proc) as tar:
        return {m.name: m for m in tar}


def _item_name(subs, key="A") -> str:
    return subs[key].lstrip("/")


def check_symlinks_kept(proc, subs):
    members = _members(subs, proc)
    a = _item_name(subs)
    assert members[f"{a}/passwd"].issym() and members[f"{a}/passwd"].linkname == "/etc/passwd"
    assert members[f"{a}/etc"].issym() and members[f"{a}/etc"].linkname == "../../../../etc"
    assert members[f"{a}/other"].issym()
    assert not any(n.startswith(f"{a}/etc/") for n in members), "a link was followed"
    assert not any(_item_name(subs, "B") in n for n in members), "another store item was read"


def check_item_symlink(proc, subs):
    members = _members(subs, proc)
    a = _item_name(subs)
    assert members[a].issym() and members[a].linkname == "/etc"
    assert [n for n in members if n.startswith(a + "/")] == []


def check_item_file(proc, subs):
    with _layer_tar(subs, proc) as tar:
        member = tar.getmember(_item_name(subs))
        assert member.isfile() and tar.extractfile(member).read() == b"just a file\n"


def check_nonutf8(proc, subs):
    # PAX names with hdrcharset=BINARY come back as the archive's encoding says
    blob = _first_layer([json.loads(line) for line in proc.stdout.splitlines()])["blob"]
    with tarfile.open(blob, "r:*", encoding="utf-8", errors="surrogateescape") as tar:
        names = {os.fsencode(m.name): m for m in tar}
    a = os.fsencode(_item_name(subs))
    assert names[a + b"/caf\xe9-\xff\xfe.txt"].isfile()
    assert os.fsencode(names[a + b"/link-\xe9"].linkname) == b"target-\xe9"


def check_long_names(proc, subs):
    with _layer_tar(subs, proc) as tar:
        leaf = f"{_item_name(subs)}/{subs['long_leaf']}"
        assert len(leaf.encode()) == 4000 - 1  # without the leading /
        assert tar.extractfile(leaf).read() == b"deep\n"
        assert tar.getmember(f"{_item_name(subs)}/longlink").linkname == "x" * 4000


def check_sparse(proc, subs):
    """Read back as a stream (zstd; tarfile skips the 8 GiB by reading them)."""
    import zstandard
    layer = _first_layer([json.loads(line) for line in proc.stdout.splitlines()])
    assert layer["uncompressed_size"] > BIG
    with open(layer["blob"], "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as plain, \
            tarfile.open(fileobj=plain, mode="r|") as tar:
        sizes = {m.name: (m.size, m.pax_headers.get("size")) for m in tar}
    assert sizes[f"{_item_name(subs)}/huge"] == (BIG, str(BIG))
    assert sizes[f"{_item_name(subs)}/bin/tool"][0] == 18


def check_odd_names(proc, subs):
    with _layer_tar(subs, proc) as tar:
        a = _item_name(subs)
        assert tar.extractfile(f"{a}/two\nlines").read() == b"n\n"
        assert tar.extractfile(f"{a}/tab\tand space ").read() == b"t\n"


def check_passthrough(proc, subs):
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {"type": "note", "keep": {"me": [1, 2]}} in recs


def check_deep_passthrough(proc, subs):
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert json.dumps(recs[1]["x"]) == subs["DEEP200"]


def check_self_reference(proc, subs):
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["references"] for r in recs if r["type"] == "path"] == [[subs["A"]]]


def check_one_path(proc, subs):
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in recs if r["type"] == "path"] == [subs["A"]]


def check_base_ignores_stray_members(proc, subs):
    image = json.loads(proc.stdout.splitlines()[-1])
    with tarfile.open(image["output"]) as tar:
        names = tar.getnames()
    assert not any(n.startswith("/") or ".." in n.split("/") for n in names), names


def check_layer_records_replaced(proc, subs):
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    layer = _first_layer(recs)
    assert layer["digest"] != "sha256:" + "0" * 64 and not layer["blob"].startswith("/etc")
    assert os.path.isfile(layer["blob"])


def _previous_layout(tmp, damage) -> dict:
    """An OCI layout whose one gzip layer blob DAMAGE rewrites (its digest then lies)."""
    root = os.path.join(tmp, "previous")
    made = images.oci_layout(root, [images.tar_bytes(("dir", "gnu"), ("file", "gnu/x", b"x" * 5000))])
    blob = os.path.join(root, "blobs", "sha256", made["layers"][0]["digest"][7:])
    with open(blob, "rb") as f:
        data = f.read()
    with open(blob, "wb") as f:
        f.write(damage(data))
    return {"previous": root}


def previous_truncated_gzip(tmp, shared, subs):
    return _previous_layout(tmp, lambda data: data[:2])


def previous_corrupt_deflate(tmp, shared, subs):
    return _previous_layout(tmp, lambda data: data[:12] + bytes([data[12] ^ 0xFF, 0xFF, 0xFF]) + data[15:])
