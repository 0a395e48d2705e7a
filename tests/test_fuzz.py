"""Fuzzing every parser with hypothesis: closure inputs (graph_formats through
closure_read), record streams (records, graph, the cores of layer-split,
layer-tar and image-assemble, layer-split --previous), layer tars of others
(layerscan) and base images (formats/source, base_image).  Any input gives a
result or a LayerpipeError, never another exception.  And the tar writer:
generated trees read back by Python's tarfile (and, marked `clients`, by
umoci) with the same contents.

The campaign is bounded: LAYERPIPE_FUZZ_EXAMPLES examples per target (default
150, about a minute in all), derandomized so CI runs the same inputs; set it
higher for a longer run, and LAYERPIPE_FUZZ_RANDOM=1 for new inputs each run.
Where atheris is installed, a coverage-guided run (tests/hostile/atheris_fuzz.py,
LAYERPIPE_ATHERIS_RUNS inputs, default 30,000) starts from the catalogue's
inputs.  Crashers found are kept as cases in tests/hostile/cases.json.
"""
import gzip
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support import images
from tests.support.counts import note
from tests.test_tarwriter import ROOTS, actual, create, expected, tar_tree

from layerpipe import base_image, closure_read, image_assemble, layer_split, layer_tar, layerscan, previous
from layerpipe.errors import LayerpipeError
from layerpipe.graph_formats import normalise_nar_hash
from layerpipe.records import RecordReader
from layerpipe.storepath import make_store_path, nix32_decode, split_store_path
from layerpipe.strategies import STRATEGIES

EXAMPLES = int(os.environ.get("LAYERPIPE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("LAYERPIPE_FUZZ_RANDOM") != "1",
                suppress_health_check=list(HealthCheck))

PATHS = [make_store_path("/gnu/store", f"p{i}-1.0", "fuzz") for i in range(4)]
WORDS = PATHS + [make_store_path("/nix/store", "n-1", "fuzz"), "/etc/passwd", "../x", "/gnu/store/..", "",
                 "sha256:" + "0" * 64, "sha256:" + "a" * 63, "md5:00", "/gnu/store/" + "0" * 32 + "-a\nb",
                 "application/vnd.oci.image.layer.v1.tar+gzip", "header", "path", "layer", "image"]
KEYS = ["type", "path", "references", "narSize", "narHash", "root", "deriver", "valid", "index", "paths",
        "digest", "diff_id", "size", "mediaType", "blob", "schema_version", "stages", "store_dir"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**70), st.floats(allow_nan=False),
                    st.sampled_from(WORDS), st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS + PATHS), st.text(max_size=8)), kids, max_size=5)),
    max_leaves=20)


def harmless(fn, *args, **kwargs):
    """FN's result, or None when it refused with a LayerpipeError; anything else fails the test."""
    note("fuzz executions")
    try:
        return fn(*args, **kwargs)
    except LayerpipeError:
        return None


def mangle(data: bytes, draw) -> bytes:
    """DATA as it is, truncated, with bytes flipped, or with junk inserted."""
    how = draw(st.sampled_from(["same", "truncate", "flip", "insert"]))
    if how == "same" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return data[:at] + draw(st.binary(max_size=8)) + data[at:]


# -- closure inputs -----------------------------------------------------------------------------

def graph_text(entries) -> bytes:
    out = []
    for path, deriver, refs, count in entries:
        out += [path, deriver, str(len(refs)) if count is None else count, *refs]
    return ("\n".join(out) + "\n").encode()


TEXT_GRAPHS = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(["", PATHS[0], "x"]),
                                 st.lists(st.sampled_from(WORDS), max_size=3),
                                 st.one_of(st.none(), st.sampled_from(["-1", "9", "x", "\u0663", ""]))),
                       max_size=5).map(graph_text)
JSON_GRAPHS = st.one_of(
    st.lists(st.dictionaries(st.sampled_from(KEYS), SCALARS | st.lists(st.sampled_from(WORDS), max_size=3)),
             max_size=5),
    st.dictionaries(st.sampled_from(PATHS + ["graph", "x"]), JSON, max_size=4), JSON,
).map(lambda doc: json.dumps(doc).encode())


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["text", "json", "bytes"]),
       fmt=st.sampled_from(["auto", "auto", "text", "json-list", "json-object", "structured-attrs"]),
       attr=st.sampled_from([None, "graph"]))
def test_closure_read_any_input(tmp_path_factory, data, kind, fmt, attr):
    raw = data.draw({"text": TEXT_GRAPHS, "json": JSON_GRAPHS, "bytes": st.binary(max_size=200)}[kind])
    raw = mangle(raw, data.draw)
    out = io.BytesIO()
    if harmless(closure_read.closure_read, io.BufferedReader(io.BytesIO(raw)), "fuzz", out,
                root="/nonexistent", fmt=fmt, attr=attr) is None and out.getvalue():
        # a success writes records that read back
        assert list(RecordReader(io.BytesIO(out.getvalue()), "out"))


@FUZZ
@given(text=st.one_of(st.text(max_size=80), st.sampled_from(WORDS)), nbytes=st.integers(1, 64))
def test_store_paths_and_hashes(text, nbytes):
    harmless(split_store_path, text)
    for fn, args in ((normalise_nar_hash, (text,)), (nix32_decode, (text, nbytes))):
        try:
            fn(*args)
        except ValueError:  # their documented refusal; callers turn it into a LayerpipeError
            pass


# -- record streams ------------------------------------------------------------------------------

RECORD = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["path", "layer", "header", "note"])},
                          optional={k: JSON for k in KEYS[1:]}),
    st.fixed_dictionaries({"type": st.just("path"), "path": st.sampled_from(PATHS),
                           "references": st.lists(st.sampled_from(PATHS), max_size=3)},
                          optional={"narSize": st.integers(-1, 10**6), "root": st.booleans()}),
    JSON)


def ndjson(draw) -> bytes:
    recs = draw(st.lists(RECORD, max_size=6))
    data = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    return mangle(data, draw)


@FUZZ
@given(data=st.data(), strategy=st.sampled_from(sorted(STRATEGIES)), max_layers=st.integers(0, 130))
def test_layer_split_core_any_records(data, strategy, max_layers):
    stream = io.BytesIO(ndjson(data.draw))
    harmless(layer_split.layer_split, RecordReader(stream, "fuzz"), io.BytesIO(), strategy=strategy,
             max_layers=max_layers)


@FUZZ
@given(data=st.data())
def test_layer_tar_and_image_assemble_checks_any_records(data):
    raw = ndjson(data.draw)
    for rec in harmless(list, RecordReader(io.BytesIO(raw), "fuzz")) or []:
        if rec.type == "layer":
            harmless(layer_tar.check_layer, rec, "/nonexistent")
            harmless(image_assemble.check_layer, rec)
    collected = harmless(image_assemble.collect, RecordReader(io.BytesIO(raw), "fuzz"))
    if collected:
        harmless(image_assemble.check_options, collected[0], image_assemble.Options())


@FUZZ
@given(data=st.data())
def test_previous_build_records_any_input(data, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "previous.ndjson"
    path.write_bytes(ndjson(data.draw))
    harmless(previous.read_previous, str(path), "/gnu/store")


# -- layer tars and base images of others ------------------------------------------------------------

ENTRY_NAMES = st.sampled_from(["a", "a/b", "bin/sh", "../evil", "/etc/x", "a/../../b", "./c", "lib", "lib/x",
                               "gnu/store/" + PATHS[0][11:], "x" * 120, "caf\u00e9", "a//b", "."])
ENTRIES = st.lists(st.one_of(
    st.tuples(st.just("file"), ENTRY_NAMES, st.binary(max_size=40)),
    st.tuples(st.just("dir"), ENTRY_NAMES),
    st.tuples(st.sampled_from(["sym", "link"]), ENTRY_NAMES, st.sampled_from(["/etc", "..", "a", "../../x", "lib"]))),
    max_size=6)


def layer_blob(draw) -> bytes:
    tar = images.tar_bytes(*draw(ENTRIES))
    tar = mangle(tar, draw) if draw(st.booleans()) else tar
    how = draw(st.sampled_from(["none", "gzip", "zstd"]))
    blob = gzip.compress(tar, mtime=0) if how == "gzip" else \
        zstandard.ZstdCompressor().compress(tar) if how == "zstd" else tar
    return mangle(blob, draw)


@FUZZ
@given(data=st.data(), with_digest=st.booleans())
def test_layerscan_any_blob(data, with_digest):
    blob = data.draw(st.one_of(st.builds(lambda: None).flatmap(lambda _: st.just(layer_blob(data.draw))),
                               st.binary(max_size=300)))
    digest = images.sha(blob) if with_digest else None
    scanned = harmless(layerscan.scan_layer, io.BytesIO(blob), len(blob), "fuzz", digest)
    if scanned is not None:
        assert scanned.digest == images.sha(blob) and scanned.size == len(blob)


def mutate_json(doc, draw, depth: int = 0):
    """DOC with one value somewhere replaced by fuzz, or one key dropped."""
    if isinstance(doc, (dict, list)) and doc and depth < 6 and draw(st.integers(0, 3)):
        keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
        key = draw(st.sampled_from(keys))
        if isinstance(doc, dict) and draw(st.integers(0, 4)) == 0:
            return {k: v for k, v in doc.items() if k != key}
        copy = dict(doc) if isinstance(doc, dict) else list(doc)
        copy[key] = mutate_json(doc[key], draw, depth + 1)
        return copy
    return draw(JSON)


def fuzzed_base(root: str, draw) -> str:
    """A sound OCI layout or Docker archive, then one of its JSON files, a blob or
    the whole tar damaged."""
    tars = [images.tar_bytes(*draw(ENTRIES)) or images.tar_bytes(("dir", "bin"))]
    kind = draw(st.sampled_from(["oci-dir", "oci-tar", "docker"]))
    if kind == "docker":
        path = os.path.join(root, "base.tar")
        images.docker_archive(path, tars)
        with tarfile.open(path) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    else:
        images.oci_layout(os.path.join(root, "layout"), tars, how=draw(st.sampled_from(["gzip", "zstd", "none"])))
        files = {}
        for folder, _, names in os.walk(os.path.join(root, "layout")):
            for name in names:
                full = os.path.join(folder, name)
                files[os.path.relpath(full, os.path.join(root, "layout"))] = open(full, "rb").read()
    victim = draw(st.sampled_from(sorted(files)))
    try:
        doc = json.loads(files[victim])
        files[victim] = json.dumps(mutate_json(doc, draw)).encode()
    except ValueError:
        files[victim] = mangle(files[victim], draw)
    if kind == "oci-dir":
        for name, body in files.items():
            with open(os.path.join(root, "layout", name), "wb") as f:
                f.write(body)
        return os.path.join(root, "layout")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, body in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    path = os.path.join(root, "base.tar")
    with open(path, "wb") as f:
        f.write(mangle(out.getvalue(), draw) if draw(st.integers(0, 3)) == 0 else out.getvalue())
    return path


def read_base(path: str, ref, arch: str):
    with base_image.open_base(path, ref, arch) as base:
        return base


@FUZZ
@given(data=st.data(), ref=st.sampled_from([None, "base:1", "other"]), arch=st.sampled_from(["amd64", "arm64"]))
def test_base_image_and_previous_any_image(data, ref, arch):
    with tempfile.TemporaryDirectory() as tmp:
        path = fuzzed_base(tmp, data.draw)
        harmless(read_base, path, ref, arch)
        harmless(previous.read_previous, path, "/gnu/store")


# -- the tar writer: generated trees round trip -------------------------------------------------------

@FUZZ
@given(tree=ROOTS)
def test_tar_writer_round_trips_through_tarfile(tree):
    note("fuzz executions")
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(os.fsencode(tmp), b"item")
        create(root, tree)
        assert actual(tar_tree(root)) == expected(tree)


@pytest.mark.clients
@settings(FUZZ, max_examples=max(3, EXAMPLES // 50))
@given(tree=ROOTS)
def test_tar_writer_round_trips_through_umoci(tree):
    """A small sample: the tree as a store item, through layer-tar and
    image-assemble, unpacked by umoci, is the tree."""
    from conftest import BIN
    from tests.support import clients
    clients.require("umoci")
    note("fuzz executions")
    item = make_store_path("/gnu/store", "tree-1.0", "fuzz")
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        create(os.fsencode(root + item), tree)
        records = json.dumps({"type": "layer", "index": 0, "paths": [item]}) + "\n"
        import subprocess
        subprocess.run(["bash", "-o", "pipefail", "-c",
                        f"{BIN}/layer-tar -q --root {root} --blob-dir {tmp}/b | {BIN}/image-assemble --arch amd64"
                        f" --format oci --tag tree:1 -o {tmp}/oci >/dev/null"],
                       input=records.encode(), check=True, timeout=120)
        rootfs = clients.umoci_unpack(f"{tmp}/oci", "tree:1", f"{tmp}/bundle")
        try:
            clients.compare_trees(root, rootfs, [item])
        finally:
            shutil.rmtree(f"{tmp}/bundle", ignore_errors=True)


# -- coverage-guided: atheris, when installed ---------------------------------------------------------

ATHERIS_RUNS = int(os.environ.get("LAYERPIPE_ATHERIS_RUNS", "30000"))
TARGET_OF = {"closure-read": 0, "layer-split": 1, "image-assemble": 2}


def seed_corpus(folder) -> int:
    """The catalogue's inputs (tests/hostile/cases.json) and a few layer tars, each
    behind the byte that picks its target in tests/hostile/atheris_fuzz.py."""
    from tests.test_hostile import CASES, STORE, substitute
    subs = {**STORE, "HEADER": '{"type":"header","schema_version":1}', "LONG": "l" * 300, "DEEP": "[[]]",
            "DEEP200": "[]", "root": "/r", "tmp": "/t", "NIX": make_store_path("/nix/store", "n-1", "seed")}
    seeds = []
    for case in CASES:
        target = TARGET_OF.get(case["stage"])
        if target is None:
            continue
        if "stdin" in case:
            body = substitute(case["stdin"], subs).encode()
        elif "stdin_json" in case:
            body = json.dumps(substitute(case["stdin_json"], subs)).encode()
        elif "stdin_records" in case:
            body = b"".join(json.dumps(r).encode() + b"\n" for r in substitute(case["stdin_records"], subs))
        else:
            continue
        seeds.append(bytes([target]) + body)
    for entries in ([("file", "a", b"x")], [("sym", "lib", "/etc"), ("file", "lib/x", b"")], [("file", "../e", b"")]):
        tar = images.tar_bytes(*entries)
        seeds += [b"\x03" + tar, b"\x03" + gzip.compress(tar, mtime=0)]
    for n, seed in enumerate(seeds):
        (folder / f"seed-{n:03d}").write_bytes(seed)
    return len(seeds)


def test_atheris_campaign(tmp_path):
    """A bounded coverage-guided run (LAYERPIPE_ATHERIS_RUNS inputs, at most a
    minute), seeded with the catalogue: no crash."""
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris; optional)")
    import re
    import subprocess
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seed_corpus(corpus)
    script = os.path.join(os.path.dirname(__file__), "hostile", "atheris_fuzz.py")
    proc = subprocess.run([sys.executable, script, f"-runs={ATHERIS_RUNS}", "-max_total_time=60",
                           f"-artifact_prefix={tmp_path}/", str(corpus)],
                          capture_output=True, text=True, timeout=300)
    done = re.search(r"Done (\d+) runs", proc.stderr)
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "oom-", "timeout-"))]
    assert proc.returncode == 0 and done and not crashes, proc.stderr[-3000:]
    note("fuzz executions (atheris)", int(done.group(1)))
