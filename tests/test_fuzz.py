"""Fuzzing: every parser, fed what hypothesis makes up, ends in a result or a
LayerpipeError (one line), never another exception, never a hang (tests/fuzz/targets.py);
and the tar writer's output reads back, through Python's tarfile and through
umoci, as exactly the tree it was made from.

Inputs come three ways: raw bytes; documents built to be nearly right (a valid
graph, record stream, manifest or image with one part changed at random); and
valid documents with bytes flipped, cut or inserted.  Then atheris fuzzes the
same parsers coverage-guided from the seeds in tests/fuzz/corpus.
LAYERPIPE_FUZZ_EXAMPLES=N runs N examples per property and
LAYERPIPE_ATHERIS_SECONDS=S runs atheris S seconds, instead of what the default
run affords (the whole file stays within about two minutes); the number of
inputs tried is printed at the end.  Inputs that once broke a parser stay as
@example cases (and in the corpus).
"""
import contextlib
import io
import json
import os

import pytest
from hypothesis import HealthCheck, event, example, given, settings, strategies as st

from layerpipe.errors import LayerpipeError
from layerpipe.graph_formats import FORMATS
from layerpipe.imagetree import DIR, FILE, LINK, ImageTree
from layerpipe.records import RecordReader
from layerpipe.storepath import make_store_path
from layerpipe.strategies import STRATEGIES
from tests.fuzz import targets
from tests.fuzz.images import IMAGES
from tests.fuzz.trees import TREES, check_round_trip, make_tree, tar_items

EXAMPLES = int(os.environ.get("LAYERPIPE_FUZZ_EXAMPLES", "0"))


def fuzz(default: int):
    return settings(max_examples=EXAMPLES or default, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    """Say how many inputs the fuzzers tried (the issue note counts them)."""
    yield
    total = sum(targets.COUNTS.values())
    line = f"fuzz: {total} inputs tried: " + ", ".join(f"{k} {v}" for k, v in sorted(targets.COUNTS.items()))
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write("\n")
            reporter.write_line(line)
    if os.environ.get("LAYERPIPE_FUZZ_REPORT"):
        with open(os.environ["LAYERPIPE_FUZZ_REPORT"], "a") as f:
            f.write(line + "\n")


def settle(name: str, fn, *args):
    """targets.settle, and whether the input was accepted or refused (--hypothesis-show-statistics)."""
    out = targets.settle(name, fn, *args)
    event(f"{name}: {'refused' if isinstance(out, LayerpipeError) else 'accepted'}")
    return out


# -- building blocks -----------------------------------------------------------------------------

STORE = "/gnu/store"
ITEMS = [make_store_path(STORE, f"item{i}-1.0") for i in range(6)]
ODD_PATHS = [
    "/gnu/store", "/gnu/store/", "gnu/store/x", "/nix/store/" + ITEMS[0].rsplit("/", 1)[1],
    ITEMS[0] + "/bin", STORE + "/../etc/passwd", STORE + "/./" + ITEMS[1].rsplit("/", 1)[1],
    STORE + "/" + "e" * 32 + "-bad-hash", STORE + "/" + "0" * 32 + "-.dotname", STORE + "/" + "0" * 32 + "-a\nb",
    STORE + "/" + "0" * 32 + "-" + "n" * 212, "", "/", "//gnu//store", "/gnu/store/\x00", "\udcff",
]
PATHS = st.one_of(st.sampled_from(ITEMS), st.sampled_from(ITEMS), st.sampled_from(ODD_PATHS),
                  st.text(max_size=40))
HASHES = st.sampled_from([
    "sha256:" + "a" * 64, "sha256:" + "0" * 52, "sha256-" + "A" * 43 + "=", "a" * 64, "0" * 52, "sha1:abc",
    "md5-AAAA", "sha256:" + "z" * 52, "sha256-!!!!", "sha256:" + "A" * 44, "", "sha256:",
])
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                         st.text(max_size=20))
JSON = st.recursive(JSON_SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                    max_leaves=10)
NUMBERS = st.one_of(st.integers(0, 10**9), st.sampled_from([-1, 2**64, True, 1.5, "12", None]))


def mutate(data: bytes, draw) -> bytes:
    """DATA with a few bytes changed, removed or added."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if how == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif how == "cut":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif how == "insert":
            data[pos:pos] = draw(st.sampled_from([b"\n", b"\"", b"{", b"]", b"\\", b"0", b"/", b"\xff", b"\x00",
                                                  b"99999999999999999999", b"-", b"\n\n"]))
        else:
            del data[pos:]
    return bytes(data)


@st.composite
def entries(draw):
    """A closure as (path, deriver, narSize, narHash, references): mostly sound, sometimes not."""
    n = draw(st.integers(1, 5))
    paths = draw(st.lists(PATHS, min_size=n, max_size=n))
    return [(p, draw(st.one_of(st.just(""), PATHS)), draw(NUMBERS), draw(HASHES),
             draw(st.lists(st.one_of(st.sampled_from(paths), PATHS), max_size=4))) for p in paths]


def render(fmt: str, closure: list, draw) -> bytes:
    """CLOSURE written in graph format FMT, its counts sometimes wrong."""
    def count(refs):
        return str(len(refs) + draw(st.sampled_from([0, 0, 0, 1, -1])))
    if fmt == "text":
        return "".join(f"{p}\n{d}\n{count(r)}\n" + "".join(f"{x}\n" for x in r) for p, d, _, _, r in closure).encode(
            "utf-8", "surrogateescape")
    if fmt == "registration":
        return "".join(f"{p}\n{h}\n{s}\n{d}\n{count(r)}\n" + "".join(f"{x}\n" for x in r)
                       for p, d, s, h, r in closure).encode("utf-8", "surrogateescape")
    if fmt == "paths":
        return "".join(f"{p}\n" for p, *_ in closure).encode("utf-8", "surrogateescape")
    objects = [{"path": p, "narSize": s, "narHash": h, "references": r, **({"deriver": d} if d else {}),
                **draw(st.dictionaries(st.sampled_from(["valid", "path", "references", "narSize"]), JSON,
                                       max_size=1))}
               for p, d, s, h, r in closure]
    if fmt == "json-object":
        doc = {o.pop("path") if isinstance(o.get("path"), str) else "x": o for o in objects}
    elif fmt == "structured-attrs":
        doc = {draw(st.sampled_from(["graph", "closure", "refs"])): objects,
               **draw(st.dictionaries(st.text(max_size=5), JSON, max_size=2))}
    else:
        doc = objects
    return json.dumps(doc).encode("utf-8", "surrogatepass")


GRAPH_FORMATS = [f for f in FORMATS if f != "auto"]


@st.composite
def graph_inputs(draw):
    fmt = draw(st.sampled_from(GRAPH_FORMATS))
    data = render(fmt, draw(entries()), draw)
    if draw(st.booleans()):
        data = mutate(data, draw)
    return data, draw(st.sampled_from(["auto", fmt, *FORMATS]))


# -- graph formats (closure-read) ------------------------------------------------------------------

@fuzz(1500)
@given(graph_inputs())
@example((b"", "auto"))
@example((b"/gnu/store/x\n\n99999999999999999999999\n", "text"))
@example((f"{ITEMS[0]}\nsha256:{'a' * 64}\n18446744073709551616\n\n0\n".encode(), "auto"))  # orjson TypeError, once
@example((b'{"/gnu/store/a": {"narSize": 1e400}}', "auto"))
@example((b'{"/gnu/store/00000000000000000000000000000000-a\\nb": {"narSize": 0}}', "auto"))  # a 2-line error, once
@example((b'[{"path": "/gnu\\n/store/00000000000000000000000000000000-a", "narSize": 0}]', "auto"))
def test_graph_formats_answer_or_refuse(case):
    data, fmt = case
    out = settle("graph", targets.graph, data, fmt)
    if isinstance(out, bytes):  # accepted: the path records must read back
        recs = [r.data for r in RecordReader(io.BytesIO(out), "out")]
        assert [r["path"] for r in recs] == sorted(r["path"] for r in recs)


@fuzz(800)
@given(st.binary(max_size=300), st.sampled_from(FORMATS))
def test_graph_formats_on_random_bytes(data, fmt):
    settle("graph", targets.graph, data, fmt)


# -- records (every stage's reader) -------------------------------------------------------------------

RECORD_KEYS = ["type", "path", "references", "narSize", "narHash", "root", "deriver", "index", "paths",
               "digest", "diff_id", "size", "mediaType", "blob", "schema_version", "stages", "store_dir"]
DIGEST = "sha256:" + "ab" * 32
GOOD_VALUES = {
    "type": st.sampled_from(["header", "path", "layer", "path", "note"]), "path": PATHS,
    "references": st.lists(PATHS, max_size=3), "narSize": NUMBERS, "root": st.booleans(),
    "index": st.integers(-1, 4), "paths": st.lists(PATHS, max_size=3), "digest": st.just(DIGEST),
    "diff_id": st.just(DIGEST), "size": NUMBERS, "blob": st.just(f"/b/blobs/sha256/{DIGEST[7:]}"),
    "mediaType": st.sampled_from(["application/vnd.oci.image.layer.v1.tar+gzip", "x"]),
    "schema_version": st.sampled_from([1, 1, 2, 0, True, "1"]), "stages": st.lists(st.text(max_size=4), max_size=2),
}


@st.composite
def record_streams(draw):
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        keys = draw(st.lists(st.sampled_from(RECORD_KEYS), unique=True, max_size=8))
        rec = {k: draw(st.one_of(GOOD_VALUES[k], JSON) if k in GOOD_VALUES and draw(st.integers(0, 4))
                       else JSON) for k in ["type", *keys]}
        lines.append(json.dumps(rec).encode("utf-8", "surrogatepass") + b"\n")
    data = b"".join(lines)
    return mutate(data, draw) if draw(st.integers(0, 3)) == 0 else data


@fuzz(600)
@given(record_streams(), st.sampled_from(sorted(STRATEGIES)), st.sampled_from([2, 3, 100, 1, 126]))
@example(b'{"type":"header","schema_version":1}\n{"type":"header","schema_version":1}\n', "stable", 100)
def test_record_readers_answer_or_refuse(data, strategy, max_layers):
    settle("records", targets.records, data)
    settle("layer-split", targets.split, data, strategy, max_layers)
    settle("layer-tar-input", targets.tar_input, data)
    settle("assemble-input", targets.assemble_input, data)
    settle("previous-records", targets.previous_records, data)


@fuzz(500)
@given(st.binary(max_size=200))
def test_record_readers_on_random_bytes(data):
    settle("records", targets.records, data)
    settle("layer-split", targets.split, data)


@settings(max_examples=EXAMPLES // 10 or 12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.data())
@pytest.mark.parametrize("stage", ["closure-read", "layer-split", "layer-tar", "image-assemble"])
def test_stages_answer_or_refuse_through_the_cli(tmp_path_factory, stage, data):
    """As a user sees it: exit 0, or 1 or 2 with one `stage: ...` line on
    stderr and no internal error; a refused image leaves no file behind."""
    import subprocess

    from conftest import BIN

    stdin = data.draw(graph_inputs())[0] if stage == "closure-read" else data.draw(record_streams())
    tmp = tmp_path_factory.mktemp("cli")
    args = {"closure-read": ["--root", str(tmp)], "layer-split": [],
            "layer-tar": ["--root", str(tmp), "--blob-dir", str(tmp / "blobs")],
            "image-assemble": ["-o", str(tmp / "out" / "image.tar")]}[stage]
    (tmp / "out").mkdir()
    proc = subprocess.run([str(BIN / stage), *args], input=stdin, capture_output=True, timeout=60,
                          env={**os.environ, "LAYERPIPE_DEBUG": "0"})
    targets.COUNTS[f"cli {stage}"] += 1
    err = proc.stderr.decode(errors="replace")
    event(f"cli {stage}: exit {proc.returncode}")
    assert proc.returncode in (0, 1, 2), (proc.returncode, err)
    if proc.returncode:
        assert err.count("\n") == 1 and err.startswith(f"{stage}: "), err
        assert "internal error" not in err, err
        assert not os.listdir(tmp / "out"), os.listdir(tmp / "out")


# -- s-expressions and profiles --------------------------------------------------------------------

ATOMS = st.one_of(st.sampled_from(["#t", "#f", "#:key", "'x", ".", "#xyz", "-12", "+3", "manifest", "version",
                                   "packages", "search-paths", "propagated-inputs", "directory", "regular",
                                   '"\\x41;"', '"\\xZZ;"', '"\\x110000;"', '"\\q"', '"a\\"b"', "#|c|#", ";c\n"]),
                  st.text(st.characters(blacklist_categories=("Cs",)), max_size=6).map(json.dumps),
                  st.from_regex(r"[a-z0-9.:/-]{1,6}", fullmatch=True))
SEXPS = st.deferred(lambda: st.one_of(ATOMS, ATOMS, st.lists(SEXPS, max_size=4).map(lambda xs: "(" + " ".join(xs) + ")")))


@st.composite
def manifests(draw):
    """A Guix manifest, the entries and search paths made up, parts of it replaced by anything."""
    def any_or(good):
        return draw(SEXPS) if draw(st.integers(0, 6)) == 0 else good
    spec = any_or('("{}" ({}) {} {} {})'.format(
        draw(st.sampled_from(["PATH", "GUILE_LOAD_PATH", "X"])),
        " ".join(json.dumps(f) for f in draw(st.lists(st.sampled_from(["bin", "lib", "share/x", "..", "/"]),
                                                     max_size=2))),
        draw(st.sampled_from(['":"', "#f", '""'])), draw(st.sampled_from(["directory", "regular", "symlink"])),
        draw(st.sampled_from(["#f", '"^.*\\\\.scm$"', '"("', '"a*"']))))
    entry = any_or('("name" "1.0" "out" "{}" (propagated-inputs ({})) (search-paths ({})))'.format(
        ITEMS[0], any_or(""), spec))
    return any_or("(manifest (version {}) (packages ({})))".format(
        any_or(draw(st.sampled_from(["0", "2", "3", "4", "5", "-1"]))), " ".join([entry] * draw(st.integers(0, 3)))))


TREE = ImageTree([], {"p": (DIR, "", 0o755), "p/bin": (DIR, "", 0o755), "p/lib": (LINK, "/p/bin", 0o777),
                      "p/bin/x.scm": (FILE, "", 0o444), "p/share": (LINK, "share", 0o777)})


@fuzz(1000)
@given(st.one_of(manifests(), SEXPS, st.text(max_size=80)))
@example('"\\xZZ;"')          # int() of a bad \x escape: a ValueError, once
@example('"\\x110000000;"')   # chr() out of range, once
@example("(manifest (version 4) (packages (" * 150)
@example('(manifest (version 4) (packages (("a" "1" "out" "/p" (search-paths 5)))))')  # atheris: TypeError, once
@example('(manifest (version 4) (packages (("a" "1" "out" "/p" (propagated-inputs "x")))))')
def test_sexp_and_guix_manifests_answer_or_refuse(text):
    settle("sexp", targets.sexpr, text)
    settle("guix-manifest", targets.guix_manifest, text, TREE)


NIX_MANIFESTS = st.one_of(
    st.builds(lambda e: json.dumps({"version": 2, "elements": e}),
              st.one_of(JSON, st.lists(st.fixed_dictionaries({}, optional={"attrPath": JSON, "storePaths": st.one_of(
                  JSON, st.lists(PATHS, max_size=2))}), max_size=3))),
    st.builds(lambda xs: "[ " + " ".join(xs) + " ]", st.lists(st.sampled_from(
        ['{ name = "hello-2.12"; }', '{ pname = "x"; }', "{", "}", "[", '"', "name", "=", ";", '{ name = x; }']),
        max_size=10)),
    st.text(max_size=40))


@fuzz(500)
@given(NIX_MANIFESTS)
def test_nix_manifests_answer_or_refuse(text):
    settle("nix-manifest", targets.nix_manifest, text.encode("utf-8", "surrogatepass"))


def mutate_blob(blob: bytes, data) -> bytes:
    return mutate(blob, data.draw)


# -- base images (image-assemble --base, layer-split --previous) -----------------------------------

@fuzz(600)
@given(IMAGES)
def test_base_images_answer_or_refuse(tmp_path_factory, image):
    where = image.write(tmp_path_factory.mktemp("img"))
    out = settle("base-image", targets.base_image, where)
    if image.sound:  # nothing was spoiled: it must be read, with the layers it has
        assert not isinstance(out, LayerpipeError), out
        assert len(out[0]) == image.layer_count


@fuzz(600)
@given(st.one_of(IMAGES.map(lambda image: image.layer_blob()),
                 st.builds(mutate_blob, IMAGES.map(lambda image: image.layer_blob()), st.data())))
@example(b"\x28\xb5\x2f\xfd" + b"garbage" * 10)  # a ZstdError out of the image tree, once
def test_layer_blobs_answer_or_refuse(blob):
    settle("layer-blob", targets.layer_blob, blob)
    settle("image-tree", targets.image_tree, blob)


# -- the tar writer: generated trees round-trip ----------------------------------------------------

@fuzz(250)
@given(TREES)
def test_layer_tar_round_trips_through_tarfile(tmp_path_factory, tree):
    root = tmp_path_factory.mktemp("store")
    items = make_tree(str(root), tree)
    blob = tar_items(str(root), items, str(tmp_path_factory.mktemp("blobs")))
    targets.COUNTS["tar-round-trip"] += 1
    check_round_trip(str(root), items, blob)


@pytest.mark.clients
@settings(max_examples=EXAMPLES // 20 or 5, deadline=None, database=None, suppress_health_check=list(HealthCheck),
          derandomize=not EXAMPLES)
@given(TREES)
def test_layer_tar_round_trips_through_umoci(tmp_path_factory, tree):
    from tests.fuzz.trees import check_umoci
    from tests.support.clients import require

    require("umoci")
    root = tmp_path_factory.mktemp("store")
    items = make_tree(str(root), tree)
    targets.COUNTS["umoci-round-trip"] += 1
    check_umoci(str(root), items, tmp_path_factory.mktemp("umoci"))


# -- coverage-guided: atheris, every parser in one bounded run ---------------------------------------

ATHERIS_SECONDS = int(os.environ.get("LAYERPIPE_ATHERIS_SECONDS", "25"))


def test_atheris_finds_no_crash(tmp_path):
    """libFuzzer mutates the seed corpus (tests/fuzz/corpus), guided by the
    branches each input reaches, for LAYERPIPE_ATHERIS_SECONDS; the first byte
    of an input picks the parser.  Any exception but a LayerpipeError fails."""
    import re
    import subprocess
    import sys

    from tests.support.clients import missing

    if subprocess.run([sys.executable, "-c", "import atheris"], capture_output=True).returncode:
        missing("atheris is not installed (pip install atheris; .ci/install does)")
    harness = os.path.join(os.path.dirname(__file__), "fuzz", "atheris_fuzz.py")
    (tmp_path / "corpus").mkdir()
    proc = subprocess.run([sys.executable, harness, "all", f"-max_total_time={ATHERIS_SECONDS}",
                           f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(tmp_path / "corpus")],
                          capture_output=True, timeout=ATHERIS_SECONDS + 120, cwd=tmp_path,
                          env={**os.environ, "TMPDIR": str(tmp_path)})  # libFuzzer ends without atexit
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"atheris found a crash:\n{err[-3000:]}"
    runs = re.search(r"Done (\d+) runs", err)
    assert runs, err[-2000:]
    targets.COUNTS["atheris (all parsers)"] += int(runs.group(1))
