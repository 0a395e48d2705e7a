"""scan: references found in store items' bytes, as Guix and Nix find them."""
import json
import os
import pty
import select
import signal
import subprocess
import time

import pytest

from conftest import BIN, run_stage
from layerpipe import scan
from layerpipe.errors import LayerpipeError
from layerpipe.nar import nar_size
from layerpipe.storepath import make_store_path, split_store_path

STORE = "/gnu/store"
A, B, C = (make_store_path(STORE, n, "scan") for n in ("a-1", "b-1", "c-1"))


def part(path: str) -> bytes:
    return split_store_path(path)[1].encode()


CANDIDATES = {part(p): p for p in (A, B, C)}


# -- hashes_in ---------------------------------------------------------------

@pytest.mark.parametrize("data, found", [
    (f"x {A}/lib y".encode(), {A}),
    (part(B), {B}),                                           # the whole buffer
    (b"\0" + part(A) + b"\xff" + part(C) + b"\n", {A, C}),    # binary around it
    (b"zz" + part(B) + b"zz", {B}),                           # inside a longer run: every offset
    (part(A)[:-1] + b"-" + part(A)[1:], set()),               # broken hash
    (part(A).upper(), set()),
    (b"", set()),
])
def test_hashes_in(data, found):
    assert {CANDIDATES[h] for h in scan.hashes_in(data, CANDIDATES)} == found


def test_hashes_in_a_long_run_finds_overlapping_hashes():
    run = part(A) + part(B)[5:] + part(C)  # one run of 91 nix-base32 characters
    assert scan.hashes_in(run, CANDIDATES) == {part(A), part(C)}


# -- scanning items on disk -----------------------------------------------------

def _make(root, path, files):
    base = root / path.lstrip("/")
    base.mkdir(parents=True)
    for name, content in files.items():
        dest = base / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            os.symlink(content[0], dest)
        else:
            dest.write_bytes(content)
    return str(base)


@pytest.fixture
def items(tmp_path):
    """A refers to B in a file and to itself in a name; B refers to C by a
    symlink; C refers to nothing but is a single large file."""
    fs = {
        A: _make(tmp_path, A, {"bin/a": b"#!" + B.encode() + b"/bin/sh\n",
                               f"share/{part(A).decode()}.txt": b"named after itself"}),
        B: _make(tmp_path, B, {"lib/c": (f"{C}/lib/c",)}),
    }
    c_file = tmp_path / C.lstrip("/")
    c_file.parent.mkdir(parents=True, exist_ok=True)
    c_file.write_bytes(os.urandom(1000).translate(bytes(256)) * 50)  # zeros: no base32 runs
    fs[C] = str(c_file)
    return fs


def _scan(fs, **kw):
    paths = sorted(fs)
    return scan.scan_references(paths, [fs[p] for p in paths], CANDIDATES, **kw)


EXPECTED = {A: {A, B}, B: {C}, C: set()}


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("whole", [False, True], ids=["walked-here", "walked-by-workers"])
def test_contents_names_and_symlink_targets(items, jobs, whole, monkeypatch):
    """Items walked by this process and read in pieces, or (their NAR sizes
    known and small) each walked and read by a worker; in the pool too."""
    monkeypatch.setattr(scan, "INLINE_BYTES", 0)
    sizes = [nar_size(items[p]) for p in sorted(items)] if whole else None
    assert _scan(items, jobs=jobs, sizes=sizes) == EXPECTED


@pytest.mark.parametrize("chunk", [1, 7, 31, 32, 33, 4096])
def test_hash_split_across_reads_is_found(tmp_path, monkeypatch, chunk):
    """Every split of a hash between two reads, in the pool and in process."""
    monkeypatch.setattr(scan, "CHUNK", chunk)
    data = b"x" * 45 + A.encode() + b"y" * 50
    fs = {B: _make(tmp_path, B, {"f": data})}
    for jobs in (1, 2):
        found = scan.scan_references([B], [fs[B]], CANDIDATES, jobs=jobs)
        assert found == {B: {A}}


def test_progress_counts_file_bytes(items):
    seen = []
    _scan(items, jobs=1, advance=seen.append)
    in_a = [os.path.join(d, f) for d, _, files in os.walk(items[A]) for f in files]
    assert sum(seen) == sum(os.path.getsize(f) for f in in_a) + os.path.getsize(items[C])


def test_special_file_is_refused(tmp_path):
    base = _make(tmp_path, A, {})
    os.mkfifo(os.path.join(base, "fifo"))
    with pytest.raises(LayerpipeError, match="special file"):
        scan.scan_references([A], [base], CANDIDATES)


def test_store_listing_skips_non_items_and_prefers_the_item_over_its_lock(tmp_path):
    for name in (A, B + ".lock", B, C + ".chroot"):
        (tmp_path / os.path.basename(name)).mkdir()
    for other in (".links", "trash", "not-a-store-path"):
        (tmp_path / other).mkdir()
    listing = scan.store_listing(str(tmp_path), STORE)
    assert listing == {part(A): A, part(B): B, part(C): C + ".chroot"}


# -- through closure-read ------------------------------------------------------------

def test_closure_read_scan_and_roots_agree(items, tmp_path):
    paths = "".join(f"{p}\n" for p in sorted(EXPECTED)).encode()
    scanned = run_stage("closure-read", "--root", str(tmp_path), "--scan", input=paths).stdout
    rooted = run_stage("closure-read", "--root", str(tmp_path), "--roots", input=f"{A}\n".encode()).stdout
    assert scanned == rooted
    records = [json.loads(line) for line in scanned.splitlines()[1:]]
    assert {r["path"]: set(r["references"]) for r in records} == EXPECTED
    assert [r["path"] for r in records if r["root"]] == [A]  # a self-reference does not count


def test_roots_from_a_link_to_a_store_item(items, tmp_path):
    link = tmp_path / "result"
    link.symlink_to(B)  # as ./result points into the store
    out = run_stage("closure-read", "--root", str(tmp_path), "--roots", str(link)).stdout
    assert [json.loads(line)["path"] for line in out.splitlines()[1:]] == sorted([B, C])


# -- progress, interruption ------------------------------------------------------------

def _sparse_item(tmp_path, size: int) -> str:
    """An item holding one sparse file of SIZE bytes: read at memory speed, no disk used."""
    base = _make(tmp_path, A, {})
    with open(os.path.join(base, "big"), "wb") as f:
        f.truncate(size)
    return f"{A}\n"


def _on_tty(argv, input: bytes):
    """Run ARGV with stderr on a terminal: (exit status, what the terminal got)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(argv, input=input, stdout=subprocess.DEVNULL, stderr=slave, timeout=120)
        os.close(slave)
        slave = None
        shown = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end is closed and nothing is left
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    return proc.returncode, shown.decode()


def test_progress_bar_on_a_terminal_only(tmp_path):
    listing = _sparse_item(tmp_path, 64 << 20).encode()
    argv = [str(BIN / "closure-read"), "--root", str(tmp_path), "--scan", "-j", "2"]
    status, shown = _on_tty(argv, listing)
    assert status == 0 and "closure-read: scanning [" in shown and "100%" in shown and shown.endswith("\n")
    assert _on_tty([*argv, "--quiet"], listing) == (0, "")
    assert run_stage("closure-read", *argv[1:], input=listing).stderr == b""


def test_interrupted_scan_says_one_line(tmp_path):
    """^C reaches the worker processes too (one process group): they stop
    without tracebacks, and closure-read reports once."""
    listing = tmp_path / "closure.txt"
    listing.write_text(_sparse_item(tmp_path, 64 << 30))
    proc = subprocess.Popen([str(BIN / "closure-read"), "--root", str(tmp_path), "--scan", "-j", "2", str(listing)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(2)
    assert proc.poll() is None, "the scan of 64 GiB ended too soon to be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's ^C does
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, b"closure-read: interrupted\n")


def test_an_item_that_is_a_symlink_refers_by_its_target(tmp_path):
    (tmp_path / A.lstrip("/")).parent.mkdir(parents=True)
    os.symlink(f"{B}/bin/b", tmp_path / A.lstrip("/"))
    assert scan.scan_references([A], [str(tmp_path / A.lstrip("/"))], CANDIDATES) == {A: {B}}


def test_two_items_with_one_hash_part_cannot_be_scanned(tmp_path):
    twin = A[:-3] + "other-1"
    data = f"{A}\n{twin}\n".encode()
    proc = run_stage("closure-read", "--scan", "--root", str(tmp_path), input=data, check=False)
    assert proc.returncode == 1 and proc.stderr.decode() == (
        f"closure-read: stdin:2: {twin} and {A} have the same hash part: scanning cannot tell references "
        "to them apart\n")


def test_scanner_keeps_its_workers_across_scans(items):
    with scan.Scanner(CANDIDATES, jobs=2) as scanner:
        assert scanner.references([A], [items[A]]) == {A: {A, B}}
        pool = scanner._pool
        assert pool is not None and scanner.references([B, C], [items[B], items[C]]) == {B: {C}, C: set()}
        assert scanner._pool is pool
    assert scanner._pool is None


def test_roots_progress_grows_with_the_closure(tmp_path):
    """Two passes (A, then the B it names): one bar, ending at 100%."""
    base = _make(tmp_path, A, {"bin/a": f"{B}/bin/b\n".encode()})
    big = _make(tmp_path, B, {})
    with open(os.path.join(big, "big"), "wb") as f:
        f.truncate(64 << 20)
    (tmp_path / "gnu" / "store" / ".links").mkdir()
    assert os.path.isdir(base)
    status, shown = _on_tty([str(BIN / "closure-read"), "--root", str(tmp_path), "--roots", "-j", "2"],
                            f"{A}\n".encode())
    assert status == 0 and shown.count("\n") == 1 and shown.rstrip().endswith("64 MiB")
    assert " 100% " in shown.split("\r")[-2]


# -- against a naive search -----------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from layerpipe.storepath import NIX32_ALPHABET  # noqa: E402


def naive(data: bytes, candidates) -> set[bytes]:
    return {data[i:i + 32] for i in range(len(data) - 31)} & set(candidates)


# Mostly nix-base32 characters, so that long runs and near-misses are common.
_bytes = st.lists(st.sampled_from(list(NIX32_ALPHABET.encode()) * 4 + [0, 45, 47, 255]), max_size=300).map(bytes)


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.one_of(_bytes, st.sampled_from([part(A), part(B), part(C)])), max_size=8))
def test_hashes_in_agrees_with_a_naive_search(chunks):
    data = b"".join(chunks)
    assert scan.hashes_in(data, CANDIDATES) == naive(data, CANDIDATES)


@settings(max_examples=40, deadline=None)
@given(data=st.lists(st.sampled_from([b".", b"x", part(A), part(B)[:20], part(C), b"\n"]), max_size=60).map(b"".join),
       chunk=st.integers(1, 80))
def test_pieces_find_what_the_whole_file_holds(tmp_path_factory, data, chunk):
    folder = tmp_path_factory.mktemp("pieces")
    path = folder / "f"
    path.write_bytes(data)
    saved = scan.CHUNK
    scan.CHUNK = chunk
    try:
        found = scan.scan_references([A], [str(path)], CANDIDATES, jobs=1)
    finally:
        scan.CHUNK = saved
    assert found == {A: {CANDIDATES[h] for h in naive(data, CANDIDATES)}}


def test_roots_from_a_link_into_a_store_item(items, tmp_path):
    link = tmp_path / "hello"
    link.symlink_to(f"{B}/lib/c")  # as $(which hello) points into a profile, then an item
    out = run_stage("closure-read", "--root", str(tmp_path), "--roots", str(link)).stdout
    assert [json.loads(line)["path"] for line in out.splitlines()[1:]] == sorted([B, C])


def test_roots_from_a_directory_outside_the_store(tmp_path):
    proc = run_stage("closure-read", "--roots", str(tmp_path), check=False)
    assert proc.returncode == 1 and proc.stderr.decode() == (
        f"closure-read: {tmp_path}: {os.path.realpath(tmp_path)} is not in a store item (with --roots, INPUT is "
        "a store item, a link to one, or a file listing store paths)\n")
