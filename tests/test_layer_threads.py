"""layer-tar looks the cache up first and gives the compression threads to
the layers it has to build, and its blobs do not depend on how many threads
or jobs ran (issue 4): a warm rebuild reads no store file for a cached layer,
and compresses the one new layer on every core."""
import builtins
import io
import json
import os
import random

import pytest

from conftest import run_stage
from layerpipe import blobs, cache, layer_tar
from layerpipe.records import RecordReader
from tests.support.store import build_store

CPUS = 4


def big_file(path: str, size: int, seed: int) -> None:
    """SIZE bytes, half text-like, half random: several zstd jobs and gzip blocks."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefgh ") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    data = bytearray()
    while len(data) < size:
        data += b" ".join(rng.choices(words, k=200)) + rng.randbytes(1500)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data[:size])


def split(store, tmp_path, name: str, *args: str) -> bytes:
    graph = store.write_graph(str(tmp_path / f"{name}.refs"))
    records = run_stage("closure-read", "--root", store.root, graph).stdout
    return run_stage("layer-split", *args, input=records).stdout


def in_process(store, records: bytes, blob_dir, compression: str, jobs: int) -> list[dict]:
    out = io.BytesIO()
    layer_tar.layer_tar(RecordReader(io.BytesIO(records), "in"), out, root=store.root, blob_dir=str(blob_dir),
                        compression=compression, level=None, jobs=jobs, quiet=True)
    return [r for r in map(json.loads, out.getvalue().splitlines()) if r["type"] == "layer"]


@pytest.fixture
def spy(monkeypatch):
    """Record the threads each BlobWriter gets and the store files and
    directories opened under the fixture's root."""
    seen = {"threads": [], "opened": []}
    writer = layer_tar.BlobWriter

    def blob_writer(blob_dir, compression, level, threads, pool):
        seen["threads"].append(threads)
        return writer(blob_dir, compression, level, threads, pool)

    def watch(real):
        def wrapped(path, *args, **kwargs):
            seen["opened"].append(os.fsdecode(path) if isinstance(path, (str, bytes)) else str(path))
            return real(path, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(layer_tar, "BlobWriter", blob_writer)
    monkeypatch.setattr(layer_tar, "available_cpus", lambda: CPUS)
    for module, name in [(builtins, "open"), (os, "open"), (os, "listdir"), (os, "scandir")]:
        monkeypatch.setattr(module, name, watch(getattr(module, name)))
    return seen


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_warm_run_reads_no_cached_layer_and_builds_the_new_one_on_every_core(tmp_path, spy, compression):
    root = str(tmp_path / "root")
    store = build_store(root, app_text="v1")
    before = split(store, tmp_path, "a", "--strategy", "size", "--max-layers", "10")
    cold = in_process(store, before, tmp_path / "blobs", compression, jobs=CPUS)
    assert len(cold) == 4 and len(spy["threads"]) == 4

    update = build_store(str(tmp_path / "root2"), app_text="v2")   # an application-only change
    os.rename(update.fs(update.paths["app"]), store.fs(update.paths["app"]))
    os.rename(update.fs(update.paths["profile"]), store.fs(update.paths["profile"]))
    big_file(store.fs(update.paths["app"]) + "/share/data.bin", 5 << 20, 1)
    store.references = update.references
    after = split(store, tmp_path, "b", "--strategy", "size", "--max-layers", "10")
    spy["threads"].clear()
    spy["opened"].clear()
    warm = in_process(store, after, tmp_path / "blobs", compression, jobs=CPUS)

    new = [layer for layer in warm if layer["digest"] not in {c["digest"] for c in cold}]
    assert sorted(p for layer in new for p in layer["paths"]) == sorted([update.paths["app"], update.paths["profile"]])
    assert sorted(spy["threads"]) == [CPUS // 2, CPUS]   # the big app layer on every core
    touched = {p for p in spy["opened"] if p.startswith(root)}
    for kept in ("glibc", "libfoo"):
        assert not {p for p in touched if p.startswith(store.fs(store.paths[kept]))}
    assert {p for p in touched if p.startswith(store.fs(update.paths["app"]))}   # the spy does see reads


def test_compression_threads():
    share = blobs.compression_threads
    assert share({7: 100 << 20, 8: 5000}, 2, 2) == {7: 2, 8: 1}        # the new layer and a tiny one
    assert share({0: 10, 1: 10}, 2, 2) == {0: 1, 1: 1}
    assert share({i: 10 for i in range(99)}, 2, 2) == {i: 1 for i in range(99)}
    assert share({0: 10, 1: 10, 2: 10}, 8, 2) == {0: 4, 1: 4, 2: 4}    # two at a time: half each
    assert share({0: 70, 1: 10, 2: 10, 3: 10}, 8, 8) == {0: 6, 1: 2, 2: 2, 3: 2}
    assert share({0: 0}, 4, 1) == {0: 4} and share({}, 4, 4) == {}


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jobs")
    store = build_store(str(tmp / "root"))
    big_file(store.fs(store.paths["glibc"]) + "/lib/big.so", 7 << 20, 2)
    big_file(store.fs(store.paths["app"]) + "/share/big.dat", 3 << 20, 3)
    return store, split(store, tmp, "g", "--strategy", "size", "--max-layers", "10")


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_blobs_are_the_same_for_any_jobs(big_store, tmp_path, compression):
    """--jobs 1, 2, 4 (so 4, 2 and 1 compression threads per layer, and other
    layers side by side) through the real command: byte-identical blobs."""
    store, records = big_store
    runs = {}
    for jobs in ("1", "2", "4"):
        proc = run_stage("layer-tar", "--root", store.root, "--blob-dir", str(tmp_path / jobs), "--compress",
                         compression, "--jobs", jobs, input=records)
        runs[jobs] = [r for r in map(json.loads, proc.stdout.splitlines()) if r["type"] == "layer"]
    assert max(r["uncompressed_size"] for r in runs["1"]) > 3 * blobs.ZSTD_JOB   # several zstd jobs
    digests = {jobs: [r["digest"] for r in layers] for jobs, layers in runs.items()}
    assert digests["1"] == digests["2"] == digests["4"], digests
    for a, b in zip(runs["1"], runs["4"]):
        with open(a["blob"], "rb") as fa, open(b["blob"], "rb") as fb:
            assert fa.read() == fb.read()


def test_zstd_job_size_is_in_the_cache_key(monkeypatch):
    key = cache.layer_key(["/gnu/store/x"], "zstd", 3, 1)
    assert cache.layer_key(["/gnu/store/x"], "gzip", 6, 1) != key
    monkeypatch.setattr(cache, "ZSTD_JOB", blobs.ZSTD_JOB * 2)
    assert cache.layer_key(["/gnu/store/x"], "zstd", 3, 1) != key


def test_zstd_output_follows_the_job_size(monkeypatch, tmp_path):
    """The fixed job size is what the blob depends on: another one, other bytes."""
    data = random.Random(5).randbytes(1 << 20) * 6

    def digest(where):
        writer = blobs.BlobWriter(str(tmp_path / where), "zstd", 3, 2)
        writer.write(data)
        return writer.finish().digest

    first = digest("a")
    monkeypatch.setattr(blobs, "ZSTD_JOB", 4 << 20)
    assert digest("b") != first


def test_default_jobs_are_twice_the_cpus(monkeypatch, tmp_path):
    """--jobs 0 (the default) builds two layers per CPU at once."""
    seen = {}
    monkeypatch.setattr(layer_tar, "available_cpus", lambda: 3)
    monkeypatch.setattr(layer_tar, "layer_tar", lambda reader, out, **kw: seen.update(kw))
    monkeypatch.setattr(layer_tar.cli, "open_input", lambda name: (io.BytesIO(b""), name))
    with pytest.raises(SystemExit) as status:
        layer_tar.app(["--blob-dir", str(tmp_path)], standalone_mode=False)
    assert status.value.code == 0 and seen["jobs"] == 6
    with pytest.raises(SystemExit):
        layer_tar.app(["--blob-dir", str(tmp_path), "-j", "5"], standalone_mode=False)
    assert seen["jobs"] == 5
