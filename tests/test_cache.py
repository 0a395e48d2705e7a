"""The layer cache (a rebuild reads no store file for unchanged layers) and
the block-parallel gzip that keeps blobs identical on any core count."""
import gzip
import hashlib
import json
import os
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import BIN, run_stage
from layerpipe.cache import Cache
from layerpipe.pgzip import BLOCK, ParallelGzip


@pytest.fixture
def split(store, tmp_path):
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    records = run_stage("closure-read", "--root", store.root, graph).stdout
    return run_stage("layer-split", "--strategy", "stable", input=records).stdout


def tar(store, blobs, records, *args, env=None):
    proc = run_stage("layer-tar", "--root", store.root, "--blob-dir", str(blobs), *args, input=records, env=env)
    return [r for r in map(json.loads, proc.stdout.decode().splitlines()) if r["type"] == "layer"], proc


def test_rebuild_reads_no_store_file(store, split, tmp_path):
    first, _ = tar(store, tmp_path / "b", split)
    libc = store.fs(store.paths["glibc"]) + "/lib/libc.so.6"
    os.chmod(libc, 0o644)
    with open(libc, "r+b") as f:  # same path, other bytes: only a re-read could see it
        f.write(b"changed!")
    again, _ = tar(store, tmp_path / "b", split)
    assert [l["digest"] for l in again] == [l["digest"] for l in first]
    verified, proc = tar(store, tmp_path / "b", split, "--verify")
    changed = [l for l, f in zip(verified, first) if l["digest"] != f["digest"]]
    assert len(changed) == 1 and store.paths["glibc"] in changed[0]["paths"]
    assert b"did not match a rebuild" in proc.stderr


@pytest.mark.parametrize("args,env", [(("--level", "9"), None), (("--compress", "zstd"), None),
                                      ((), {"SOURCE_DATE_EPOCH": "1700000000"})])
def test_a_changed_setting_is_a_miss(store, split, tmp_path, args, env):
    first, _ = tar(store, tmp_path / "b", split)
    other, _ = tar(store, tmp_path / "b", split, *args, env=env)
    assert not {l["digest"] for l in first} & {l["digest"] for l in other}
    fresh, _ = tar(store, tmp_path / "fresh", split, *args, env=env)
    assert [l["digest"] for l in fresh] == [l["digest"] for l in other]


def test_verify_detects_a_corrupt_blob(store, split, tmp_path):
    first, _ = tar(store, tmp_path / "b", split)
    blob = first[0]["blob"]
    size = os.path.getsize(blob)
    os.chmod(blob, 0o644)
    with open(blob, "wb") as f:
        f.write(b"\0" * size)
    _, proc = tar(store, tmp_path / "b", split, "--verify")
    assert b"is corrupt; rebuilt" in proc.stderr
    with open(blob, "rb") as f:
        assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == first[0]["digest"]


def test_concurrent_runs_agree(store, split, tmp_path):
    cmd = [str(BIN / "layer-tar"), "--root", store.root, "--blob-dir", str(tmp_path / "shared")]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    outs = [p.communicate(split, timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert outs[0][0] == outs[1][0] == outs[2][0]
    leftovers = [n for n in os.listdir(tmp_path / "shared" / "blobs" / "sha256") if n.startswith(".")]
    assert leftovers == []


def test_prune_drops_unused_entries_and_their_blobs(store, split, tmp_path):
    layers, _ = tar(store, tmp_path / "b", split)
    cache = Cache(str(tmp_path / "b"))
    entries = sorted(os.listdir(cache.index))
    old = time.time() - 40 * 86400
    stale = os.path.join(cache.index, entries[0])
    stale_blob = json.load(open(stale))["path"]
    os.utime(stale, (old, old))
    os.utime(stale_blob, (old, old))
    proc = run_stage("layer-tar", "--blob-dir", str(tmp_path / "b"), "--prune", "30")
    assert proc.stderr == b"layer-tar: removed 1 cache entries and 1 blobs\n"
    assert not os.path.exists(stale) and not os.path.exists(stale_blob)
    assert all(os.path.exists(l["blob"]) for l in layers if l["blob"] != stale_blob)


def _mixed(n: int) -> bytes:
    words = b"store layer glibc profile guile zlib reference ".split()
    text = b" ".join(words[(i * 7 + i // 3) % len(words)] for i in range(n // 8))
    return (text + os.urandom(n // 4))[:n]


@pytest.mark.parametrize("workers", [None, 1, 2, 4])
@pytest.mark.parametrize("chunk", [1, 4096, BLOCK, 3 * BLOCK + 17])
def test_parallel_gzip_is_the_same_on_any_pool(workers, chunk):
    data = _mixed(3 * BLOCK + 12345)
    reference = _compress(data, None, len(data))
    pool = ThreadPoolExecutor(workers) if workers else None
    out = _compress(data, pool, chunk if chunk > 1 else 777)
    assert out == reference
    assert gzip.decompress(out) == data
    assert zlib.decompress(out, 31) == data


def _compress(data: bytes, pool, chunk: int) -> bytes:
    comp = ParallelGzip(6, pool)
    parts = [comp.compress(data[i:i + chunk]) for i in range(0, len(data), chunk)]
    return b"".join(parts) + comp.flush()


def test_parallel_gzip_small_input_is_plain_zlib_gzip():
    data = b"hello layerpipe\n" * 1000
    comp = ParallelGzip(6, None)
    zobj = zlib.compressobj(6, zlib.DEFLATED, 31, 9)
    assert comp.compress(data) + comp.flush() == zobj.compress(data) + zobj.flush()


def test_gzip_tool_accepts_multi_block_output(tmp_path):
    data = _mixed(5 * BLOCK)
    path = tmp_path / "x.gz"
    path.write_bytes(_compress(data, ThreadPoolExecutor(2), BLOCK // 3))
    assert subprocess.run(["gzip", "-t", str(path)]).returncode == 0
