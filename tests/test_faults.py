"""Faults: layer-tar and image-assemble killed with SIGKILL at random points, a
full disk, a reader that goes away (`| head -1`), SIGINT, and two builds
sharing one cache at once.  After each: nothing under the final name, no
blob the cache index names that is missing or not its digest, and a rerun
(or the other build) gives the very bytes of a clean build.

LAYERPIPE_FAULT_SEEDS (default "1,2,3") picks the kill points: more seeds,
more kills.
"""
import hashlib
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, run_stage
from tests.support.counts import note

from layerpipe.storepath import make_store_path

SEEDS = [int(s) for s in os.environ.get("LAYERPIPE_FAULT_SEEDS", "1,2,3").split(",")]
ITEMS = [make_store_path("/gnu/store", f"data{i}-1.0", "faults") for i in range(3)]


def _fill(root: Path, size: int) -> None:
    """Three store items of 8 files of SIZE random-ish bytes (cheap to make,
    costly to compress), one per layer."""
    rng = random.Random(7)
    for path in ITEMS:
        item = root / path.lstrip("/")
        item.mkdir(parents=True)
        for n in range(8):
            (item / f"f{n}").write_bytes(rng.randbytes(size))


def layers_input() -> bytes:
    return b"".join(json.dumps({"type": "layer", "index": i, "paths": [p]}).encode() + b"\n"
                    for i, p in enumerate(ITEMS))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """The store, and a clean build: tarred records, a Docker archive and an OCI layout."""
    tmp = tmp_path_factory.mktemp("faults")
    _fill(tmp / "root", 2 << 20)
    clean = run_stage("layer-tar", "--root", str(tmp / "root"), "--blob-dir", str(tmp / "clean"),
                      input=layers_input()).stdout
    image = tmp / "clean.tar"
    run_stage("image-assemble", "--tag", "f:1", "-o", str(image), input=clean)
    return {"tmp": tmp, "root": tmp / "root", "records": clean, "image": image.read_bytes()}


def descriptors(records: bytes) -> list[tuple]:
    return [(r["diff_id"], r["digest"], r["size"]) for r in map(json.loads, records.splitlines())
            if r["type"] == "layer"]


def check_cache(blob_dir: Path) -> None:
    """Every index entry names a blob that is there, whole and its digest; every
    blob outside temp names is its own digest."""
    index = blob_dir / "index"
    for name in sorted(os.listdir(index)) if index.is_dir() else []:
        if name.startswith(".tmp"):
            continue
        entry = json.loads((index / name).read_bytes())
        with open(entry["path"], "rb") as f:
            data = f.read()
        assert ("sha256:" + hashlib.sha256(data).hexdigest(), len(data)) == (entry["digest"], entry["size"]), name
    folder = blob_dir / "blobs" / "sha256"
    for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
        if not name.startswith("."):
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == name, f"corrupt blob {name}"


def start(argv: list[str], stdin: bytes) -> subprocess.Popen:
    """ARGV running with STDIN (from a file: all of it there at once)."""
    with tempfile.TemporaryFile() as f:
        f.write(stdin)
        f.seek(0)
        return subprocess.Popen(argv, stdin=f, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_at_random(argv: list[str], stdin: bytes, rng: random.Random, span: float) -> int | None:
    """Start ARGV, SIGKILL it at a random point within SPAN seconds; its exit
    status if it finished first."""
    proc = start(argv, stdin)
    time.sleep(rng.uniform(0, span))
    finished = proc.poll()
    proc.kill()
    proc.communicate(timeout=60)
    note("faults injected (kill -9)")
    return finished


def timed(argv: list[str], stdin: bytes) -> float:
    start = time.monotonic()
    subprocess.run(argv, input=stdin, capture_output=True, check=True, timeout=300)
    return time.monotonic() - start


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_9_layer_tar(big, tmp_path, seed):
    rng = random.Random(seed)
    blobs = tmp_path / "blobs"
    argv = [str(BIN / "layer-tar"), "--root", str(big["root"]), "--blob-dir", str(blobs), "-j", "1"]
    span = timed([*argv[:-4], "--blob-dir", str(tmp_path / "timing"), "-j", "1"], layers_input())
    for _ in range(3):  # three kills into one cache, then a whole run
        kill_at_random(argv, layers_input(), rng, span)
        check_cache(blobs)
    rerun = run_stage("layer-tar", *argv[1:], input=layers_input()).stdout
    check_cache(blobs)
    assert descriptors(rerun) == descriptors(big["records"])
    out = tmp_path / "img.tar"
    run_stage("image-assemble", "--tag", "f:1", "-o", str(out), input=rerun)
    assert out.read_bytes() == big["image"]


@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
@pytest.mark.parametrize("seed", SEEDS)
def test_kill_9_image_assemble(big, tmp_path, seed, fmt):
    """After each kill the final name holds nothing, or (killed after its
    rename, before exiting) the whole image."""
    rng = random.Random(seed * 100 + len(fmt))
    out = tmp_path / "out" / ("img" if fmt == "oci" else "img.tar")
    out.parent.mkdir()
    argv = [str(BIN / "image-assemble"), "--format", fmt, "--tag", "f:1", "-o", str(out)]
    reference = tmp_path / "reference"
    span = timed([*argv[:-1], str(reference)], big["records"])
    want = tree(reference) if fmt == "oci" else big["image"]
    for _ in range(3):
        kill_at_random(argv, big["records"], rng, span)
        if out.exists():
            assert (tree(out) if fmt == "oci" else out.read_bytes()) == want, "a partial image at the final name"
            subprocess.run(["rm", "-rf", str(out)], check=True)
    run_stage("image-assemble", *argv[1:], input=big["records"])
    assert (tree(out) if fmt == "oci" else out.read_bytes()) == want
    # a killed run may leave its temp file or directory beside the output, never another name
    assert {p.name for p in out.parent.iterdir()} - {out.name} <= {p.name for p in out.parent.glob(".*.tmp")}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- a full disk ------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted for the test (root only)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a small tmpfs for the full-disk test: {proc.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def one_line(proc, prog: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.startswith(f"{prog}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    return err


def test_full_disk_under_the_blob_dir(big, small_disk):
    proc = run_stage("layer-tar", "--root", str(big["root"]), "--blob-dir", str(small_disk), "-j", "1",
                     input=layers_input(), check=False)
    note("faults injected (full disk)")
    assert "No space left on device" in one_line(proc, "layer-tar")
    check_cache(small_disk)
    assert [n for n in os.listdir(small_disk / "blobs" / "sha256") if n.startswith(".")] == []


@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_full_disk_under_the_output(big, small_disk, fmt):
    out = small_disk / ("img" if fmt == "oci" else "img.tar")
    proc = run_stage("image-assemble", "--format", fmt, "--tag", "f:1", "-o", str(out), input=big["records"],
                     check=False)
    note("faults injected (full disk)")
    assert "No space left on device" in one_line(proc, "image-assemble")
    assert os.listdir(small_disk) == [], "a partial image or temp file is left on the full disk"


# -- readers that go away, SIGINT -------------------------------------------------------------

@pytest.mark.parametrize("stage", ["layer-tar", "image-assemble"])
def test_head_1_downstream(big, tmp_path, stage):
    """`stage | head -1`: the stage ends with 141 and says nothing."""
    if stage == "layer-tar":
        cmd = f"{BIN}/layer-tar --root {big['root']} --blob-dir {tmp_path}/b"
    else:
        cmd = f"{BIN}/image-assemble --tag f:1 -o -"
    (tmp_path / "in").write_bytes(layers_input() if stage == "layer-tar" else big["records"])
    script = f'{cmd} < {tmp_path}/in 2>{tmp_path}/err | head -c 100 >/dev/null; echo "${{PIPESTATUS[0]}}"'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, timeout=120)
    note("faults injected (closed pipe)")
    assert proc.stdout.decode().strip() in ("141", "0") and (tmp_path / "err").read_bytes() == b""
    if stage == "image-assemble":  # an image is far more than a pipe holds: it cannot have finished
        assert proc.stdout.decode().strip() == "141"


@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_sigint_during_image_assemble(big, tmp_path, fmt):
    out = tmp_path / "out" / ("img" if fmt == "oci" else "img.tar")
    out.parent.mkdir()
    proc = start([str(BIN / "image-assemble"), "--format", fmt, "-o", str(out)], big["records"])
    deadline = time.monotonic() + 20
    while not list(out.parent.glob(".*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    note("faults injected (SIGINT)")
    if proc.returncode == 0:
        pytest.skip("image-assemble finished before the signal arrived")
    assert (proc.returncode, err) == (130, b"image-assemble: interrupted\n")
    assert os.listdir(out.parent) == [], "SIGINT left a temp file or a partial image"


# -- two builds, one cache ------------------------------------------------------------------

def test_two_runs_sharing_one_cache_at_once(big, tmp_path):
    blobs = tmp_path / "shared"
    procs = []
    for n in range(2):
        script = (f"set -o pipefail; {BIN}/layer-tar -j 1 --root {big['root']} --blob-dir {blobs}"
                  f" | {BIN}/image-assemble --tag f:1 -o {tmp_path}/img{n}.tar")
        procs.append(start(["bash", "-c", script], layers_input()))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    note("faults injected (concurrent runs)")
    assert (tmp_path / "img0.tar").read_bytes() == (tmp_path / "img1.tar").read_bytes() == big["image"]
    check_cache(blobs)
