"""image-assemble --store-db: the store database in the image.

Nix: a real closure built offline by nix-bin goes through the pipeline; the
image is unpacked and the real nix-store queries the database in it
(NIX_REMOTE=local?root=<rootfs>): references, `--verify --check-contents`.
Guix (no guix here): the hand-made /gnu/store of tests/support/store.py,
its database read back with sqlite3 and compared with what Guix writes.
"""
import gzip
import io
import json
import os
import sqlite3
import subprocess
import tarfile

import pytest

from conftest import BIN, run_stage
from tests.support.clients import missing, run_client
from tests.test_errors import fails

from layerpipe.nar import nar_hash
from layerpipe.storedb import Item, leaves_first


def unpack(image: str, dest) -> None:
    """Apply the layers of a Docker archive to DEST, base first."""
    with tarfile.open(image) as tar:
        layers = json.load(tar.extractfile("manifest.json"))[0]["Layers"]
        for name in layers:
            data = tar.extractfile(name).read()
            data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                layer.extractall(dest, filter="tar")


def pipeline(closure_input: str, root: str, tmp, out: str, *assemble: str) -> dict:
    cmd = (f"{BIN}/closure-read --root {root} {closure_input} | {BIN}/layer-split"
           f" | {BIN}/layer-tar --root {root} --blob-dir {tmp}/blobs"
           f" | {BIN}/image-assemble -o {out} {' '.join(assemble)}")
    proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout.splitlines()[-1])


def db_bytes(rootfs, name: str) -> bytes:
    return (rootfs / name).read_bytes()


@pytest.mark.nix
def test_nix_store_reads_the_database_in_the_image(nix_closure, tmp_path):
    if not nix_closure.sandboxed:
        missing("needs the standard /nix/store paths (a Nix sandbox)")  # a failure under CI
    (tmp_path / "pi.json").write_text(nix_closure.path_info_json)
    (tmp_path / "graph").write_text(nix_closure.graph_text)  # no narHash: computed from the store
    dbs = []
    for name in ("pi.json", "graph"):
        out = str(tmp_path / f"{name}.tar")
        pipeline(str(tmp_path / name), nix_closure.fs_root, tmp_path, out,
                 "--store-db", "nix", "--root", nix_closure.fs_root, "--entrypoint", "bin/hello")
        rootfs = tmp_path / f"rootfs-{name}"
        unpack(out, rootfs)
        db = sqlite3.connect(rootfs / "nix/var/nix/db/db.sqlite")
        dbs.append(db.execute("select id, path, hash, narSize from ValidPaths").fetchall())
        db.close()
    assert dbs[0] == dbs[1]  # the computed narHashes are the ones Nix recorded (the text graph has no deriver)
    schema = "select type, name, tbl_name, sql from sqlite_master order by name"
    real = sqlite3.connect(f"file:{nix_closure.fs_root}/nix/var/nix/db/db.sqlite?mode=ro", uri=True)
    ours = sqlite3.connect(rootfs / "nix/var/nix/db/db.sqlite")
    assert ours.execute(schema).fetchall() == real.execute(schema).fetchall()  # the schema Nix itself made
    real.close(), ours.close()
    assert (rootfs / "nix/var/nix/db/schema").read_bytes() == b"10"
    assert os.readlink(rootfs / "nix/var/nix/gcroots/docker" / nix_closure.path.rsplit("/", 1)[1]) == nix_closure.path
    env = {**nix_closure.env, "NIX_REMOTE": f"local?root={rootfs}"}
    for path, refs in nix_closure.references:
        answer = run_client(["nix-store", "-q", "--references", path], env=env).stdout.split()
        assert sorted(answer) == sorted(refs), path
    info = {e["path"]: e for e in json.loads(run_client(["nix", "path-info", "--json", "-r", nix_closure.path],
                                                        env=env).stdout)}
    original = {e["path"]: e for e in json.loads(nix_closure.path_info_json)}
    assert {p: (e["narHash"], e["narSize"]) for p, e in info.items()} == \
        {p: (e["narHash"], e["narSize"]) for p, e in original.items()}
    verify = subprocess.run(["nix-store", "--verify", "--check-contents"], env=env, capture_output=True, text=True)
    assert verify.returncode == 0 and "modified" not in verify.stderr, verify.stderr
    # and the check can fail: change one byte of a store file
    greeting = next((rootfs / "nix/store").glob("*-lib")) / "share" / "greeting"
    greeting.chmod(0o644)
    greeting.write_text("hello from elsewhere\n")
    verify = subprocess.run(["nix-store", "--verify", "--check-contents"], env=env, capture_output=True, text=True)
    assert "was modified" in verify.stderr, verify.stderr


def test_guix_database_and_links(store, tmp_path, monkeypatch):
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    out = str(tmp_path / "img.tar")
    image = pipeline(graph, store.root, tmp_path, out, "--store-db", "guix", "--root", store.root,
                     "--entrypoint", "bin/app")
    rootfs = tmp_path / "rootfs"
    unpack(out, rootfs)
    profile = store.paths["profile"]
    links = {"var/guix/gcroots/profiles": "/var/guix/profiles",
             "var/guix/profiles/per-user/root/guix-profile-1-link": profile,
             "var/guix/profiles/per-user/root/guix-profile": "guix-profile-1-link"}
    assert {k: os.readlink(rootfs / k) for k in links} == links
    assert oct((rootfs / "var/guix/db/db.sqlite").stat().st_mode & 0o777) == "0o644"
    assert not (rootfs / "var/guix/db/schema").exists()  # as guix pack: the daemon writes it
    db = sqlite3.connect(rootfs / "var/guix/db/db.sqlite")
    assert db.execute("pragma integrity_check").fetchall() == [("ok",)]
    assert db.execute("pragma foreign_key_check").fetchall() == []
    assert db.execute("pragma journal_mode").fetchall() == [("delete",)]  # no WAL files to ship
    columns = [r[1] for r in db.execute("pragma table_info(ValidPaths)")]
    assert columns == ["id", "path", "hash", "registrationTime", "deriver", "narSize"]
    assert [r[1] for r in db.execute("pragma table_info(Refs)")] == ["referrer", "reference"]
    rows = db.execute("select id, path, hash, registrationTime, deriver, narSize from ValidPaths order by id").fetchall()
    ids = {path: i for i, path, *_ in rows}
    order = [p for _, p, *_ in rows]
    for path, refs in store.references.items():  # leaves first, as Guix registers them
        assert all(ids[r] <= ids[path] for r in refs)
    for _, path, digest, when, deriver, size in rows:
        assert (digest, size) == nar_hash(store.fs(path)) and when == 1 and deriver is None
    refs = db.execute("select referrer, reference from Refs order by referrer, reference").fetchall()
    assert sorted((order[a - 1], order[b - 1]) for a, b in refs) == \
        sorted((p, r) for p, rs in store.references.items() for r in rs)
    with tarfile.open(out) as tar:
        config = json.load(tar.extractfile("blobs/sha256/" + image["image_id"][7:]))
    assert config["history"][-2]["comment"] == "store database: /var/guix/db/db.sqlite (4 store items)"
    assert len(config["rootfs"]["diff_ids"]) == len(image["layers"]) == len(config["history"])


def test_database_bytes_are_reproducible(store, tmp_path):
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    seen = set()
    for run in range(2):
        out = str(tmp_path / f"img{run}.tar")
        image = pipeline(graph, store.root, tmp_path / f"t{run}", out, "--store-db", "nix", "--root", store.root)
        unpack(out, tmp_path / f"rootfs{run}")
        seen.add((db_bytes(tmp_path / f"rootfs{run}", "nix/var/nix/db/db.sqlite"), image["image_id"]))
    assert len(seen) == 1
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        out = str(tmp_path / "later.tar")
        image = pipeline(graph, store.root, tmp_path / "later", out, "--store-db", "nix", "--root", store.root)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    unpack(out, tmp_path / "rootfs-later")
    db = sqlite3.connect(tmp_path / "rootfs-later/nix/var/nix/db/db.sqlite")
    assert {r[0] for r in db.execute("select registrationTime from ValidPaths")} == {1700000000}


def test_leaves_first_breaks_ties_by_path():
    items = [Item("/s/c", "h", 1, ("/s/a",)), Item("/s/b", "h", 1, ("/s/b",)), Item("/s/a", "h", 1, ())]
    assert [i.path for i in leaves_first(items)] == ["/s/a", "/s/b", "/s/c"]


@pytest.mark.parametrize("change, args, status, what", [
    (None, ["--store-db", "rpm"], 2, "--store-db must be one of guix, nix"),
    ("drop-app", ["--store-db", "nix"], 1, "which has no path record"),
    (None, ["--store-db", "nix", "--root", "/nonexistent"], 1, "has no narHash and is not under /nonexistent"),
])
def test_store_db_errors(store, tmp_path, change, args, status, what):
    graph = store.write_graph(str(tmp_path / "graph.refs"))  # a text graph: no narHash
    split = run_stage("layer-split", input=run_stage("closure-read", "--root", store.root, graph).stdout).stdout
    lines = run_stage("layer-tar", "--root", store.root, "--blob-dir", str(tmp_path / "b"), input=split).stdout.splitlines()
    if change == "drop-app":
        lines = [l for l in lines if json.loads(l).get("path") != store.paths["app"]]
    message = fails("image-assemble", "-o", str(tmp_path / "i.tar"), "--root", store.root, *args,
                    input=b"".join(l + b"\n" for l in lines), status=status)
    assert what in message
    assert not (tmp_path / "i.tar").exists()


def test_missing_nar_size_is_computed(store, tmp_path):
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    split = run_stage("layer-split", input=run_stage("closure-read", "--root", store.root, graph).stdout).stdout
    lines = [json.loads(l) for l in run_stage("layer-tar", "--root", store.root, "--blob-dir",
                                               str(tmp_path / "b"), input=split).stdout.splitlines()]
    for rec in lines:
        if rec["type"] == "path":
            rec["narHash"] = "sha256:" + "0" * 64  # given, so not computed; narSize is
            del rec["narSize"]
    run_stage("image-assemble", "-o", str(tmp_path / "i.tar"), "--store-db", "nix", "--root", store.root,
              input=b"".join(json.dumps(r).encode() + b"\n" for r in lines))
    unpack(str(tmp_path / "i.tar"), tmp_path / "rootfs")
    db = sqlite3.connect(tmp_path / "rootfs/nix/var/nix/db/db.sqlite")
    rows = dict(db.execute("select path, narSize from ValidPaths"))
    assert rows == {p: nar_hash(store.fs(p))[1] for p in store.references}
