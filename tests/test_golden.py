"""Golden records per stage, compared byte for byte (tests/golden/README.md).

Each case is a directory tests/golden/<stage>/<case>/ holding its inputs, the
command line (`cmd`, placeholders $ROOT, $BLOBS, $OUT), `expected.ndjson` and a
README line saying how it was produced.  Optional files:

- store.json   a store to build under $ROOT before running (see build_spec);
- env          KEY=VALUE lines for the environment (SOURCE_DATE_EPOCH is
               otherwise unset, so the documented default applies);
- normalise    record fields whose values differ per run (blob paths, output
               paths, digests of compressors whose output is not pinned);
- requires     `zlib <version>`: skip unless that compressor version is loaded;
- from         `<stage>/<case>` whose expected output is this case's input;
- expected-config.json  the image config inside the image written to $OUT.

LAYERPIPE_REGENERATE_GOLDEN=1 rewrites the expected files (and the inputs of
chained cases) instead of comparing, and skips so that a run that regenerates
is never mistaken for a passing one.
"""
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from conftest import BIN

GOLDEN = Path(__file__).resolve().parent / "golden"
STAGES = ("closure-read", "layer-split", "layer-tar", "image-assemble")
REGENERATE = os.environ.get("LAYERPIPE_REGENERATE_GOLDEN") == "1"
NORMALISED = "<normalised>"


def golden_cases() -> list[Path]:
    """Cases in pipeline order, so that a regeneration feeds chained inputs in turn."""
    cases = []
    for stage in STAGES:
        folder = GOLDEN / stage
        if folder.is_dir():
            cases += sorted(p for p in folder.iterdir() if (p / "cmd").is_file())
    return cases


def build_spec(root: Path, spec_file: Path) -> None:
    """Build the store described by SPEC_FILE (a JSON list) under ROOT.

    Entries: {"path", "text", "exec"?, "repeat"?} a file (text repeated),
    {"path", "symlink"} a symlink, {"path", "dir": true} an empty directory.
    Parent directories are implied.
    """
    for entry in json.loads(spec_file.read_text(encoding="utf-8")):
        dest = root / entry["path"].lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if entry.get("dir"):
            dest.mkdir(exist_ok=True)
        elif "symlink" in entry:
            os.symlink(entry["symlink"], dest)
        else:
            dest.write_bytes(entry["text"].encode() * entry.get("repeat", 1))
            dest.chmod(0o555 if entry.get("exec") else 0o444)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def _dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def normalise(output: bytes, fields: list[str]) -> bytes:
    """Replace the values of top-level FIELDS in every record; lines without
    them stay as they are, byte for byte."""
    lines = []
    for line in output.decode("utf-8").splitlines():
        record = json.loads(line)
        if any(key in record for key in fields):
            # Re-serialising must not hide a difference in the other fields.
            assert _dumps(record) == line, f"cannot normalise {line!r} byte-faithfully"
            record.update((key, NORMALISED) for key in fields if key in record)
            line = _dumps(record)
        lines.append(line + "\n")
    return "".join(lines).encode("utf-8")


def check_requirements(case: Path) -> None:
    for line in _lines(case / "requires"):
        lib, version = line.split()
        assert lib == "zlib", f"{case}/requires: unknown library {lib!r}"
        if zlib.ZLIB_RUNTIME_VERSION != version:
            pytest.skip(f"pinned for zlib {version}, this is zlib {zlib.ZLIB_RUNTIME_VERSION}")


def run_case(case: Path, tmp: Path, blobs: Path | None = None) -> tuple[bytes, Path]:
    """Run the case's command in its directory; (stdout, $OUT)."""
    root, out = tmp / "root", tmp / "out"
    blobs = blobs or tmp / "blobs"
    if (case / "store.json").is_file() and not root.exists():
        build_spec(root, case / "store.json")
    words = shlex.split((case / "cmd").read_text())
    assert words[0] == case.parent.name, f"{case}/cmd must run {case.parent.name}"
    subst = {"$ROOT": str(root), "$BLOBS": str(blobs), "$OUT": str(out)}
    args = [subst.get(w, w) for w in words[1:]]
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "LAYERPIPE_DEBUG")}
    env.update(line.split("=", 1) for line in _lines(case / "env"))
    proc = subprocess.run([str(BIN / words[0]), *args], cwd=case, capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stderr == b"", (
        f"{' '.join(words)} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc.stdout, out


def chained_input(case: Path, tmp: Path) -> bytes:
    """What this case's input.ndjson must be: the output of the case named in `from`.

    For image-assemble the blob paths become relative (blobs/sha256/<hex>, blobs
    kept in the case directory); when regenerating, the upstream case is run
    again with its blobs written there.
    """
    upstream = GOLDEN / (case / "from").read_text().strip()
    if case.parent.name != "image-assemble":
        return (upstream / "expected.ndjson").read_bytes()
    if REGENERATE:
        shutil.rmtree(case / "blobs", ignore_errors=True)
        output, _ = run_case(upstream, tmp / "upstream", blobs=case)
    else:
        output = (upstream / "expected.ndjson").read_bytes()
    lines = []
    for line in output.decode().splitlines():
        record = json.loads(line)
        if "blob" in record:
            record["blob"] = "blobs/sha256/" + record["digest"].split(":")[1]
        lines.append(_dumps(record) + "\n")
    return "".join(lines).encode()


def image_config(out: Path) -> bytes:
    """The config blob of the image at OUT (an archive or an OCI directory)."""
    if out.is_dir():
        read = lambda name: (out / name).read_bytes()  # noqa: E731
    else:
        tar = tarfile.open(out)
        read = lambda name: tar.extractfile(name).read()  # noqa: E731
    index = json.loads(read("index.json"))
    manifest = json.loads(read("blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
    return read("blobs/sha256/" + manifest["config"]["digest"].split(":")[1])


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: f"{c.parent.name}/{c.name}")
def test_golden(case: Path, tmp_path: Path):
    assert (case / "README").is_file(), f"{case}: say how the case was produced in README"
    check_requirements(case)
    if (case / "from").is_file():
        derived = chained_input(case, tmp_path)
        if REGENERATE:
            (case / "input.ndjson").write_bytes(derived)
        assert (case / "input.ndjson").read_bytes() == derived, (
            f"{case}/input.ndjson is not the output of {(case / 'from').read_text().strip()}: regenerate")
    output, out = run_case(case, tmp_path)
    output = normalise(output, _lines(case / "normalise"))
    config_file = case / "expected-config.json"
    if REGENERATE:
        (case / "expected.ndjson").write_bytes(output)
        if config_file.exists() or case.parent.name == "image-assemble":
            config_file.write_bytes(image_config(out) + b"\n")
        pytest.skip("regenerated: review the diff before committing")
    assert output.decode() == (case / "expected.ndjson").read_text(encoding="utf-8")
    if config_file.exists():
        assert image_config(out).decode() + "\n" == config_file.read_text(encoding="utf-8")


def test_there_are_golden_cases_for_every_stage():
    stages = {case.parent.name for case in golden_cases()}
    assert stages == set(STAGES)


def test_image_assemble_blobs_match_their_names():
    """The committed blobs are inputs: a corrupted one would make the case test
    image-assemble's refusal instead of its output."""
    import hashlib
    blobs = list(GOLDEN.glob("image-assemble/*/blobs/sha256/*"))
    assert blobs
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob


def test_normalise_replaces_only_the_named_fields():
    out = normalise(b'{"type":"layer","blob":"/x/y","size":3}\n{"type":"path"}\n', ["blob"])
    assert out == b'{"type":"layer","blob":"<normalised>","size":3}\n{"type":"path"}\n'
