"""The catalogue of hostile inputs (tests/hostile/cases.json), every case through
the real command: a refusal is one `<stage>: ...` line matching the case's
regex, with its exit status, no traceback and no internal error, and nothing
under the output name (no image, no temp file beside it, no half blob, no
records on stdout); correct handling is exit status 0 and the case's check.

Substitutions in a case's strings: @A@ @B@ @C@ (store paths under /gnu/store),
@NIX@ (one under /nix/store), @root@ (the store's root), @tmp@, @blobs@,
@out@ (image-assemble's -o), @HEADER@ (a schema 1 header), @LONG@ (4,000
bytes of name), @DEEP@ and @DEEP200@ (JSON lists nested 100,000 and 200
deep), @shared@ (where the shared tarred records' blobs are), and what a fixture
(tests/hostile/fixtures.py) adds (@base@, @previous@, ...).
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, run_stage
from tests.hostile import fixtures
from tests.support.counts import note
from tests.support.store import build_store

from layerpipe.storepath import make_store_path

HERE = Path(__file__).parent / "hostile"
CASES = json.loads((HERE / "cases.json").read_text())["cases"]
DEFAULT_ARGS = {
    "closure-read": ["--root", "@root@"],
    "layer-split": [],
    "layer-tar": ["--root", "@root@", "--blob-dir", "@blobs@", "-q"],
    "image-assemble": ["-o", "@out@", "--arch", "amd64"],
}
STORE = {k: make_store_path("/gnu/store", f"{k.lower()}-1.0", "hostile") for k in "ABC"}


class Shared:
    """A small store tarred once (gzip and zstd), for image-assemble's cases."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        store = build_store(str(tmp / "root"))
        graph = store.write_graph(str(tmp / "graph.refs"))
        split = run_stage("layer-split", input=run_stage("closure-read", "--root", store.root, graph).stdout).stdout
        self.tarred = {c: run_stage("layer-tar", "--root", store.root, "--blob-dir", str(tmp / c),
                                    "--compress", c, input=split).stdout for c in ("gzip", "zstd")}

    def records(self, compression: str = "gzip") -> list[dict]:
        return [json.loads(line) for line in self.tarred[compression].splitlines()]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return Shared(tmp_path_factory.mktemp("hostile-shared"))


def substitute(value, subs: dict):
    if isinstance(value, str):
        for key, text in subs.items():
            if isinstance(text, str):
                value = value.replace(f"@{key}@", text)
        return value
    if isinstance(value, list):
        return [substitute(v, subs) for v in value]
    if isinstance(value, dict):
        return {substitute(k, subs): substitute(v, subs) for k, v in value.items()}
    return value


def ndjson(recs: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


def tarred_input(spec: dict, shared: Shared, subs: dict) -> bytes:
    recs = shared.records(spec.get("compression", "gzip"))
    layer = next(r for r in recs if r["type"] == "layer")
    layer.update(substitute(spec.get("edit", {}), subs))
    for key in spec.get("drop", []):
        del layer[key]
    if "path_edit" in spec:
        next(r for r in recs if r["type"] == "path").update(spec["path_edit"])
    data = ndjson(recs)
    return data[:-spec["truncate"]] if "truncate" in spec else data


def case_input(case: dict, shared: Shared, subs: dict) -> bytes:
    if "stdin" in subs:
        return subs["stdin"]
    if "stdin" in case:
        return substitute(case["stdin"], subs).encode()
    if "stdin_latin1" in case:
        return substitute(case["stdin_latin1"], subs).encode("latin-1")
    if "stdin_json" in case:
        return json.dumps(substitute(case["stdin_json"], subs)).encode()
    if "stdin_records" in case:
        return ndjson(substitute(case["stdin_records"], subs))
    if "stdin_tarred" in case:
        return tarred_input(case["stdin_tarred"], shared, subs)
    return b""


def unprivileged(argv: list[str]) -> list[str]:
    """Root reads any file: drop the capabilities that let it, to see a refusal."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: an unreadable file cannot be made")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *argv]


def check_nothing_left(case: dict, subs: dict, stdout: bytes) -> None:
    stage = case["stage"]
    if stage == "image-assemble":
        assert os.listdir(subs["outdir"]) == [], "something was left under the output name"
    if stage in ("closure-read", "layer-split"):
        assert stdout == b"", "records were written before the refusal"
    if stage == "layer-tar":
        assert [json.loads(line)["type"] for line in stdout.splitlines()] in ([], ["header"])
        folder = Path(subs["blobs"]) / "blobs" / "sha256"
        blobs = sorted(os.listdir(folder)) if folder.is_dir() else []
        assert blobs == [], f"half or unindexed blobs left: {blobs}"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_case(case, shared, tmp_path):
    note("hostile cases tried")
    outdir = tmp_path / "out"
    outdir.mkdir()
    subs = {"tmp": str(tmp_path), "root": str(tmp_path / "root"), "blobs": str(tmp_path / "blobs"),
            "outdir": str(outdir), "out": str(outdir / "img.tar"), **STORE,
            "NIX": make_store_path("/nix/store", "n-1.0", "hostile"),
            "HEADER": '{"type":"header","schema_version":1}', "LONG": "l" * 4000,
            "DEEP": "[" * 100_000 + "]" * 100_000, "DEEP200": "[" * 200 + "]" * 200,
            "shared": str(shared.tmp)}
    made = getattr(fixtures, case["fixture"])(str(tmp_path), shared, subs) if "fixture" in case else None
    subs.update(made or {})
    argv = [str(BIN / case["stage"]), *substitute(DEFAULT_ARGS[case["stage"]] + case.get("args", []), subs)]
    if case.get("unprivileged"):
        argv = unprivileged(argv)
    try:
        proc = subprocess.run(argv, input=case_input(case, shared, subs), capture_output=True, timeout=180,
                              env={**os.environ, **case.get("env", {})})
    finally:
        if "cleanup" in subs:
            subs["cleanup"]()
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err and "internal error" not in err, err
    if "stderr_not" in case:
        assert case["stderr_not"] not in err, err
    if case["status"] == 0:
        assert proc.returncode == 0, err
        getattr(fixtures, case["check"])(proc, subs)
        return
    prefix = case["stage"] + ": "
    assert (proc.returncode, err.count("\n"), err[:len(prefix)]) == (case["status"], 1, prefix), err
    message = err[len(prefix):-1]
    assert re.search(substitute(case["stderr"], subs), message), f"{message!r} !~ {case['stderr']!r}"
    check_nothing_left(case, subs, proc.stdout)


def test_the_catalogue_is_big_and_covers_every_stage():
    assert len(CASES) >= 60
    assert len({c["id"] for c in CASES}) == len(CASES)
    for stage in DEFAULT_ARGS:
        stage_cases = [c for c in CASES if c["stage"] == stage]
        assert len(stage_cases) >= 10 and any(c["status"] for c in stage_cases), stage
    for case in CASES:
        assert case["status"] != 0 or "check" in case, case["id"]
        assert case["status"] == 0 or "stderr" in case, case["id"]
