"""Security: nothing outside the listed store items gets into a layer (a symlink
farm pointing at /etc and at other store items, and files swapped for links
while the tree is read); produced tars hold no absolute names, no `..`, no
setuid/setgid bits, no devices; the cache index is input too and is checked;
errors and records never show credentials.  (Records naming blobs or digests
that lie: the `lt-untrusted-*` and `ia-blob-*` cases of tests/hostile.)"""
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile

import pytest

from conftest import BIN, run_stage
from tests.support.store import build_store

from layerpipe import tarwriter
from layerpipe.cache import layer_key
from layerpipe.errors import LayerpipeError
from layerpipe.storepath import make_store_path
from layerpipe.tarwriter import TarWriter, add_tree

A, B = (make_store_path("/gnu/store", f"{n}-1.0", "security") for n in "ab")
SECRET = b"only-in-B-" + b"s" * 40


def layer(*paths) -> bytes:
    return json.dumps({"type": "layer", "index": 0, "paths": list(paths)}).encode() + b"\n"


def tar_members(blob: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(blob, "r:*") as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar]


@pytest.fixture
def farm(tmp_path):
    """A (listed) is a farm of links to /etc, to /etc/passwd, out with `..`, and
    into B (not listed), whose file holds SECRET."""
    root = tmp_path / "root"
    a, b = root / A.lstrip("/"), root / B.lstrip("/")
    (b / "share").mkdir(parents=True)
    (b / "share" / "secret").write_bytes(SECRET)
    (a / "lib").mkdir(parents=True)
    (a / "lib" / "real").write_bytes(b"mine\n")
    links = {"etc": "/etc", "passwd": "/etc/passwd", "up": "../../../../../../../../etc/shadow",
             "lib/b-dir": f"{B}/share", "lib/b-file": f"{B}/share/secret", "lib/b-rel": f"../../{B[11:]}/share",
             "lib/self": ".", "lib/loop": "loop", "lib/root-etc": str(root) + "/etc"}
    for name, target in links.items():
        os.symlink(target, a / name)
    return root, links


def test_symlink_farm_reads_nothing_outside_the_listed_items(farm, tmp_path):
    root, links = farm
    out = run_stage("layer-tar", "--root", str(root), "--blob-dir", str(tmp_path / "blobs"), input=layer(A)).stdout
    rec = json.loads(out.splitlines()[1])
    members = tar_members(rec["blob"])
    a = A.lstrip("/")
    names = {m.name for m, _ in members}
    assert names == {"gnu", "gnu/store", a, f"{a}/lib", f"{a}/lib/real"} | {f"{a}/{n}" for n in links}
    kept = {m.name[len(a) + 1:]: m.linkname for m, _ in members if m.issym()}
    assert kept == links  # every link stored as it is, none followed
    data = b"".join(body for _, body in members)
    assert data == b"mine\n"  # the only file contents: A's own file
    with open("/etc/passwd", "rb") as f:
        assert f.read()[:32] not in data


@pytest.mark.parametrize("swap", ["file", "directory"])
def test_entry_swapped_for_a_link_while_read_is_refused(tmp_path, monkeypatch, swap):
    """Between the lstat that says `file` (or `directory`) and the open, the
    entry becomes a link to /etc: the open does not follow it."""
    item = tmp_path / "item"
    (item / "sub").mkdir(parents=True)
    (item / "sub" / "f").write_bytes(b"ok\n")
    (item / "victim").write_bytes(b"innocent\n") if swap == "file" else (item / "victim").mkdir()
    real_lstat = os.lstat

    def lstat_then_swap(path, *args, **kwargs):
        result = real_lstat(path, *args, **kwargs)
        if os.fsencode(path) == b"victim":
            victim = item / "victim"
            victim.unlink() if swap == "file" else victim.rmdir()
            victim.symlink_to("/etc/passwd" if swap == "file" else "/etc")
        return result
    monkeypatch.setattr(tarwriter.os, "lstat", lstat_then_swap)
    chunks = []
    with pytest.raises(LayerpipeError, match=r"/item/victim: (Too many levels of symbolic links|Not a directory)"):
        add_tree(TarWriter(chunks.append, 1), os.fsencode(item), b"item")
    with open("/etc/passwd", "rb") as f:
        assert f.read()[:32] not in b"".join(chunks)


def test_tars_have_no_absolute_names_dotdot_setid_bits_or_devices(tmp_path):
    """A store with setuid and setgid files, a setgid and a world-writable
    directory: the image's layers (top layer included) carry none of it."""
    store = build_store(str(tmp_path / "root"))
    glibc = store.fs(store.paths["glibc"])
    os.chmod(f"{glibc}/lib/libc.so.6", 0o6755)
    os.makedirs(f"{glibc}/setgid-dir")
    os.chmod(f"{glibc}/setgid-dir", 0o2777 | stat.S_ISVTX)
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    image = tmp_path / "img.tar"
    subprocess.run(["bash", "-o", "pipefail", "-c",
                    f"{BIN}/closure-read --root {store.root} {graph} | {BIN}/layer-split | {BIN}/layer-tar"
                    f" --root {store.root} --blob-dir {tmp_path}/b | {BIN}/image-assemble --symlink /bin=bin"
                    f" -o {image} >/dev/null"], check=True, timeout=120)
    layers = 0
    with tarfile.open(image) as outer:
        def read(name):
            return outer.extractfile(name).read()
        index = json.loads(read("index.json"))
        manifest = json.loads(read("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
        for desc in manifest["layers"]:
            layers += 1
            inner = tarfile.open(fileobj=io.BytesIO(read("blobs/sha256/" + desc["digest"][7:])), mode="r:*")
            for m in inner:
                assert not m.name.startswith("/") and ".." not in m.name.split("/"), m.name
                assert m.type in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE), (m.name, m.type)
                assert m.mode & (stat.S_ISUID | stat.S_ISGID) == 0, (m.name, oct(m.mode))
                assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", ""), m.name
                if m.name.endswith("libc.so.6"):
                    assert m.mode == 0o555
    assert layers == 5  # four store items and the top layer


def test_the_cache_index_is_checked_not_trusted(tmp_path):
    """An index entry for the layer's very key, naming /etc/passwd (with its
    size and digest): a miss, the layer is built and stored in the blob dir."""
    root = tmp_path / "root"
    (root / A.lstrip("/")).mkdir(parents=True)
    (root / A.lstrip("/") / "f").write_bytes(b"a\n")
    blobs = tmp_path / "blobs"
    (blobs / "index").mkdir(parents=True)
    passwd = open("/etc/passwd", "rb").read()
    digest = "sha256:" + hashlib.sha256(passwd).hexdigest()
    entry = {"diff_id": digest, "digest": digest, "size": len(passwd), "uncompressed_size": len(passwd),
             "path": "/etc/passwd", "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
    (blobs / "index" / layer_key([A], "gzip", 6, 1)).write_text(json.dumps(entry))
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    proc = subprocess.run([str(BIN / "layer-tar"), "--root", str(root), "--blob-dir", str(blobs)], input=layer(A),
                          capture_output=True, env=env, timeout=60, check=True)
    rec = json.loads(proc.stdout.splitlines()[1])
    assert rec["blob"] == str(blobs / "blobs" / "sha256" / rec["digest"][7:]) and rec["digest"] != digest
    assert [m.name for m, _ in tar_members(rec["blob"])][-1] == f"{A.lstrip('/')}/f"


# -- credentials ---------------------------------------------------------------------------

SECRETS = {"REGISTRY_PASSWORD": "pw-Tr0ub4dor-3", "GITHUB_TOKEN": "ghp_0123456789abcdef"}
ARGS = {"closure-read": [], "layer-split": [], "layer-tar": ["--blob-dir", "/nonexistent"],
        "image-assemble": ["-o", "/nonexistent/x.tar"]}


@pytest.mark.parametrize("stage", list(ARGS))
@pytest.mark.parametrize("where", ["env", "url"])
def test_errors_never_print_credentials(stage, where, tmp_path):
    name = (f"{tmp_path}/{SECRETS['REGISTRY_PASSWORD']}/{SECRETS['GITHUB_TOKEN']}.in" if where == "env"
            else f"https://builder:{SECRETS['REGISTRY_PASSWORD']}@registry.example.com/x.in")
    proc = run_stage(stage, *ARGS[stage], name, check=False, env=SECRETS)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1 and "No such file or directory" in err, err
    assert all(s not in err for s in SECRETS.values()) and "***" in err, err


def test_records_and_images_carry_no_environment_secrets(tmp_path):
    store = build_store(str(tmp_path / "root"))
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    env = {**os.environ, **SECRETS}
    proc = subprocess.run(["bash", "-o", "pipefail", "-c",
                           f"{BIN}/closure-read --root {store.root} {graph} | {BIN}/layer-split | {BIN}/layer-tar"
                           f" --root {store.root} --blob-dir {tmp_path}/b | tee {tmp_path}/tarred"
                           f" | {BIN}/image-assemble -o {tmp_path}/img.tar"],
                          capture_output=True, env=env, check=True, timeout=120)
    everything = proc.stdout + (tmp_path / "tarred").read_bytes() + (tmp_path / "img.tar").read_bytes()
    assert all(s.encode() not in everything for s in SECRETS.values())
