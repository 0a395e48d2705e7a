"""Bad inputs through the real commands: one line on stderr, `<command>: ...`,
no traceback, the documented exit status; closed pipes, terminals, signals."""
import glob
import json
import os
import pty
import select
import signal
import subprocess
import time

import pytest

from conftest import BIN, run_stage
from tests.support.store import build_store

from layerpipe.storepath import make_store_path

STAGES = ("closure-read", "layer-split", "layer-tar", "image-assemble")
A = make_store_path("/gnu/store", "a-1.0", "errors")
B = make_store_path("/gnu/store", "b-1.0", "errors")
HEADER_V2 = b'{"type":"header","schema_version":2,"stages":["closure-read"]}\n'


def one_line_error(proc: subprocess.CompletedProcess, command: str, status: int) -> str:
    """The message, once checked to be one `command: ` line with exit STATUS."""
    err = proc.stderr.decode()
    assert proc.returncode == status, (proc.returncode, err)
    assert err.startswith(f"{command}: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err[len(command) + 2:-1]


def fails(command: str, *args: str, input: bytes = b"", status: int = 1, env: dict | None = None) -> str:
    return one_line_error(run_stage(command, *args, input=input, check=False, env=env), command, status)


def graph_json(*entries) -> bytes:
    return json.dumps([{"path": p, "narSize": n, "references": r} for p, n, r in entries]).encode()


@pytest.fixture(scope="module")
def tarred(tmp_path_factory):
    """A store, its tarred layer records (gzip and zstd) and where they live."""
    tmp = tmp_path_factory.mktemp("errors")
    store = build_store(str(tmp / "root"))
    graph = store.write_graph(str(tmp / "graph.refs"))
    split = run_stage("layer-split", input=run_stage("closure-read", "--root", store.root, graph).stdout).stdout
    result = {"tmp": tmp, "store": store, "split": split}
    for compression in ("gzip", "zstd"):
        result[compression] = run_stage("layer-tar", "--root", store.root, "--blob-dir", str(tmp / compression),
                                        "--compress", compression, input=split).stdout
    return result


def records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines()]


def ndjson(recs: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


# -- every stage --------------------------------------------------------------

@pytest.mark.parametrize("command", STAGES[1:])
def test_not_json(command):
    message = fails(command, input=b'{"type":"header","schema_version":1}\n{oops\n')
    assert message.startswith("stdin:2: not a JSON record")


@pytest.mark.parametrize("command", STAGES[1:])
def test_newer_schema_version(command):
    message = fails(command, input=HEADER_V2 + b'{"type":"path"}\n')
    assert message.startswith("stdin:1: schema version 2 is newer")


@pytest.mark.parametrize("command", STAGES[1:])
def test_truncated_input(command):
    assert "truncated" in fails(command, input=b'{"type":"header","schema_version":1}\n{"type":"pa')


@pytest.mark.parametrize("command", STAGES)
def test_missing_input_file(command, tmp_path):
    assert fails(command, str(tmp_path / "nope")) == f"{tmp_path / 'nope'}: No such file or directory"


@pytest.mark.parametrize("command, message", [
    ("closure-read", "empty input"),
    ("layer-split", "no path records"),
    ("layer-tar", "no layer records"),
    ("image-assemble", "no layer records"),
])
def test_empty_input(command, message):
    assert message in fails(command)


def test_layer_tar_input_without_layer_records(tmp_path):
    data = b'{"type":"path","path":"%s","narSize":1,"references":[]}\n' % A.encode()
    assert "no layer records" in fails("layer-tar", "--blob-dir", str(tmp_path), input=data)


@pytest.mark.parametrize("command", STAGES)
def test_unknown_option_is_a_one_line_usage_error(command):
    assert "--no-such-option" in fails(command, "--no-such-option", status=2)


@pytest.mark.parametrize("command, args", [("layer-split", ["--max-layers", "many"]), ("layer-tar", ["-j"]),
                                           ("image-assemble", ["--format"])])
def test_bad_or_missing_option_value_is_a_one_line_usage_error(command, args):
    fails(command, *args, status=2)


# -- closure-read ---------------------------------------------------------------

def test_missing_reference(tmp_path):
    graph = tmp_path / "graph.refs"
    graph.write_text(f"{A}\n\n1\n{B}\n")
    message = fails("closure-read", str(graph))
    assert message == f"{graph}:4: {A} refers to {B}, which is not in the closure"


def test_duplicate_path_with_conflicting_nar_size():
    message = fails("closure-read", input=graph_json((A, 10, []), (A, 11, [])))
    assert message == f"stdin: entry 1: {A} listed again with different narSize (first at stdin: entry 0)"


def test_identical_duplicate_is_folded():
    out = run_stage("closure-read", input=graph_json((A, 10, []), (A, 10, []))).stdout
    assert [r["path"] for r in records(out)[1:]] == [A]


def test_path_outside_the_store_dir():
    nix = make_store_path("/nix/store", "c-1.0")
    message = fails("closure-read", input=graph_json((A, 1, [nix]), (nix, 1, [])))
    assert message == f"stdin: entry 1: {nix}: outside the store directory /gnu/store"


@pytest.mark.parametrize("bad", [
    "/gnu/store/" + "e" * 32 + "-x",          # 'e' is not nix-base32
    "/gnu/store/" + "0" * 31 + "-x",          # 31 characters
    "/gnu/store/" + "0" * 32 + "-.x",         # name starting with '.'
    "/gnu/../store/" + "0" * 32 + "-x",
])
def test_bad_store_path(bad):
    message = fails("closure-read", input=graph_json((bad, 1, [])))
    assert message.startswith("stdin: entry 0: ")
    assert repr(bad) in message or "'/gnu/../store': store directory" in message


def test_cycle():
    message = fails("closure-read", input=graph_json((A, 1, [B]), (B, 1, [A])))
    assert "reference cycle among 2 items" in message


@pytest.mark.parametrize("data, message", [
    (b"[{", "stdin: invalid JSON"),
    (b"hello\n", "unrecognised input"),
    (b"{}", "stdin: cannot tell which attribute"),
    (b"7", "unrecognised input"),
])
def test_not_a_closure(data, message):
    assert fails("closure-read", input=data).startswith(message)


def test_store_item_missing_for_nar_size(tmp_path):
    message = fails("closure-read", "--root", str(tmp_path), input=f"{A}\n\n0\n".encode())
    assert message.startswith(f"stdin:1: {A}: no such store item")


def test_closure_read_unknown_format():
    assert "--format" in fails("closure-read", "--format", "yaml", input=graph_json((A, 1, [])), status=2)


# -- layer-split ------------------------------------------------------------------

def path_records(*entries) -> bytes:
    return ndjson([{"type": "path", "path": p, "narSize": 1, "references": r} for p, r in entries])


@pytest.mark.parametrize("n", ["1", "126", "0", "-3"])
def test_max_layers_out_of_range(n):
    message = fails("layer-split", "--max-layers", n, input=path_records((A, [])), status=2)
    assert message == f"--max-layers must be between 2 and 125, not {n}"


@pytest.mark.parametrize("n, layers", [("2", 1), ("3", 2), ("125", 3)])
def test_max_layers_boundaries(n, layers):
    c = make_store_path("/gnu/store", "c-1.0", "errors")
    out = run_stage("layer-split", "--max-layers", n, input=path_records((A, [B]), (B, [c]), (c, []))).stdout
    assert len([r for r in records(out) if r["type"] == "layer"]) == layers


def test_unknown_strategy():
    message = fails("layer-split", "--strategy", "no-such-strategy", input=path_records((A, [])), status=2)
    assert message.startswith("unknown strategy 'no-such-strategy' (known: ")
    assert "single" in message and "two-layer" in message


def test_split_reference_without_path_record():
    message = fails("layer-split", input=path_records((A, [B])))
    assert message == f"stdin:1: {A} refers to {B}, which has no path record"


def test_split_duplicate_path_record():
    assert "duplicate path record (first at stdin:1)" in fails("layer-split", input=path_records((A, []), (A, [])))


def test_split_input_with_layers_already():
    data = path_records((A, [])) + b'{"type":"layer","index":0,"paths":[]}\n'
    assert fails("layer-split", input=data) == "stdin:2: input already has layer records"


def test_split_bad_field():
    data = ndjson([{"type": "path", "path": A, "narSize": -1, "references": []}])
    assert fails("layer-split", input=data) == "stdin:1: path record field 'narSize' must not be negative"


# -- layer-tar --------------------------------------------------------------------

def test_layer_tar_missing_store_item(tmp_path):
    data = ndjson([{"type": "layer", "index": 0, "paths": [A]}])
    message = fails("layer-tar", "--root", str(tmp_path), "--blob-dir", str(tmp_path / "b"), input=data)
    assert A in message and "no such store item" in message
    assert message.startswith("stdin:1: ")


def test_layer_tar_layer_without_paths(tmp_path):
    data = ndjson([{"type": "layer", "index": 0, "paths": []}])
    assert fails("layer-tar", "--blob-dir", str(tmp_path), input=data) == "stdin:1: layer record has no paths"


def test_layer_tar_special_file(tmp_path):
    item = tmp_path / A.lstrip("/")
    item.mkdir(parents=True)
    os.mkfifo(item / "fifo")
    data = ndjson([{"type": "layer", "index": 0, "paths": [A]}])
    message = fails("layer-tar", "--root", str(tmp_path), "--blob-dir", str(tmp_path / "b"), input=data)
    assert "special file" in message and str(item / "fifo") in message
    assert [f for f in os.listdir(tmp_path / "b" / "blobs" / "sha256")] == []  # the half blob is gone


@pytest.mark.parametrize("args, status", [
    (["--compress", "bzip2"], 2), (["--level", "10"], 2), (["--compress", "zstd", "--level", "0"], 2),
    (["--compress", "none", "--level", "1"], 2), (["--jobs", "-1"], 2),
])
def test_layer_tar_bad_options(tmp_path, args, status):
    fails("layer-tar", *args, "--blob-dir", str(tmp_path), input=b'{"type":"layer","index":0,"paths":["%s"]}\n'
          % A.encode(), status=status)


def test_bad_source_date_epoch(tarred):
    message = fails("layer-tar", "--root", tarred["store"].root, "--blob-dir", str(tarred["tmp"] / "sde"),
                    input=tarred["split"], env={"SOURCE_DATE_EPOCH": "yesterday"}, status=2)
    assert "SOURCE_DATE_EPOCH" in message


# -- image-assemble ----------------------------------------------------------------

def leftovers(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_layer_records_without_digest(tarred, tmp_path):
    message = fails("image-assemble", "-o", str(tmp_path / "img.tar"), input=tarred["split"])
    assert message.endswith("layer record has no digest: run layer-tar before image-assemble")
    assert leftovers(tmp_path) == []


def edit_layer(data: bytes, **changes) -> bytes:
    recs = records(data)
    layer = next(r for r in recs if r["type"] == "layer")
    layer.update(changes)
    return ndjson(recs)


@pytest.mark.parametrize("blob", ["/tmp/elsewhere/{hex}", "{dir}/blobs/sha256/{hex}.gz", "{dir}/blobs/{hex}",
                                  "{dir}/blobs/sha256/" + "0" * 64])
def test_blob_not_at_blobs_sha256_hex(tarred, tmp_path, blob):
    recs = records(tarred["gzip"])
    layer = next(r for r in recs if r["type"] == "layer")
    folder, hexname = os.path.dirname(os.path.dirname(os.path.dirname(layer["blob"]))), layer["digest"][7:]
    data = edit_layer(tarred["gzip"], blob=blob.format(dir=folder, hex=hexname))
    message = fails("image-assemble", "-o", str(tmp_path / "img.tar"), input=data)
    assert "blobs/sha256/<hex of its digest>" in message
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt, out", [("docker-archive", "img.tar"), ("oci-archive", "img.tar"), ("oci", "img")])
def test_blob_contents_not_matching_digest(tarred, tmp_path, fmt, out):
    """Same size, one bit flipped: caught while copying; nothing is left at -o."""
    recs = records(tarred["gzip"])
    layer = next(r for r in recs if r["type"] == "layer")
    fake_dir = tmp_path / "blobs" / "blobs" / "sha256"
    fake_dir.mkdir(parents=True)
    body = bytearray(open(layer["blob"], "rb").read())
    body[len(body) // 2] ^= 0x10
    (fake_dir / layer["digest"][7:]).write_bytes(bytes(body))
    data = edit_layer(tarred["gzip"], blob=str(fake_dir / layer["digest"][7:]))
    outdir = tmp_path / "out"
    outdir.mkdir()
    message = fails("image-assemble", "--format", fmt, "-o", str(outdir / out), input=data)
    assert message == f"layer blob {fake_dir / layer['digest'][7:]} does not match its digest {layer['digest']}"
    assert leftovers(outdir) == []  # no image, no temp file or directory beside it


def test_blob_missing(tarred, tmp_path):
    data = edit_layer(tarred["gzip"], blob=str(tmp_path / "blobs" / "sha256" / ("1" * 64)), digest="sha256:" + "1" * 64)
    message = fails("image-assemble", "-o", str(tmp_path / "img.tar"), input=data)
    assert "No such file or directory" in message
    assert leftovers(tmp_path) == []


def test_failed_write_keeps_an_existing_image(tarred, tmp_path):
    target = tmp_path / "img.tar"
    target.write_bytes(b"the old image")
    fails("image-assemble", "-o", str(target), input=edit_layer(tarred["gzip"], size=1))
    assert target.read_bytes() == b"the old image" and leftovers(tmp_path) == ["img.tar"]


@pytest.mark.parametrize("fmt, out", [("docker-archive", "img.tar"), ("oci", "img")])
def test_output_in_a_missing_directory(tarred, tmp_path, fmt, out):
    target = tmp_path / "missing" / out
    message = fails("image-assemble", "--format", fmt, "-o", str(target), input=tarred["gzip"])
    assert ".tmp" not in message and str(target.parent) in message and "No such file or directory" in message


def test_oci_output_refuses_what_is_not_a_layout(tarred, tmp_path):
    target = tmp_path / "img"
    target.mkdir()
    (target / "precious").write_text("keep")
    message = fails("image-assemble", "--format", "oci", "-o", str(target), input=tarred["gzip"])
    assert message == f"{target}: exists and is not an OCI image layout; not replacing it"
    assert leftovers(tmp_path) == ["img"] and leftovers(target) == ["precious"]


def _ref_names(layout) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    return [d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]]


def test_oci_output_adds_to_a_layout_and_replaces_by_name(tarred, tmp_path):
    target = tmp_path / "img"
    run_stage("image-assemble", "--format", "oci", "--tag", "old:1", "-o", str(target), input=tarred["gzip"])
    run_stage("image-assemble", "--format", "oci", "--tag", "new:1", "-o", str(target), input=tarred["gzip"])
    assert _ref_names(target) == ["old:1", "new:1"]
    blobs = set(os.listdir(target / "blobs" / "sha256"))
    run_stage("image-assemble", "--format", "oci", "--tag", "old:1", "-e", "A=1", "-o", str(target), input=tarred["gzip"])
    assert _ref_names(target) == ["old:1", "new:1"]  # replaced in its place
    after = set(os.listdir(target / "blobs" / "sha256"))
    assert len(after - blobs) == 2 and len(blobs - after) == 0  # new config and manifest; old:1's were new:1's too
    run_stage("image-assemble", "--format", "oci", "--tag", "new:1", "-e", "A=1", "-o", str(target), input=tarred["gzip"])
    final = set(os.listdir(target / "blobs" / "sha256"))
    # the first config and manifest, now reached by no name, are gone; the layers stay
    assert after - blobs <= final < after and len(final) == len(after) - 2
    assert leftovers(tmp_path) == ["img"]  # the old layouts and the temp directories are gone


@pytest.mark.parametrize("value, status", [("8589934591", 0), ("8589934592", 2), ("-1", 2), ("1.5", 2), ("", 2)])
def test_source_date_epoch_range(tarred, tmp_path, value, status):
    proc = run_stage("image-assemble", "-o", str(tmp_path / "i.tar"), input=tarred["gzip"], check=False,
                     env={"SOURCE_DATE_EPOCH": value})
    if status:
        assert "SOURCE_DATE_EPOCH" in one_line_error(proc, "image-assemble", status)
    else:
        assert proc.returncode == 0, proc.stderr


def test_docker_archive_with_zstd_layers(tarred, tmp_path):
    message = fails("image-assemble", "-o", str(tmp_path / "img.tar"), input=tarred["zstd"], status=2)
    assert "zstd" in message
    assert leftovers(tmp_path) == []
    run_stage("image-assemble", "--format", "oci-archive", "-o", str(tmp_path / "img.tar"), input=tarred["zstd"])


def test_layer_index_gap(tarred, tmp_path):
    data = edit_layer(tarred["gzip"], index=5)
    assert "without gaps or repeats" in fails("image-assemble", "-o", str(tmp_path / "i.tar"), input=data)


@pytest.mark.parametrize("args, what", [
    (["--format", "qcow2"], "--format"),
    (["--format", "oci", "-o", "-"], "directory"),
    (["--tag", "app:"], "--tag"),
    (["--arch", "sparc64-linux"], "unknown architecture"),
    (["--env", "NOVALUE"], "--env"),
    (["--symlink", "bin=bin"], "--symlink"),
    (["--entrypoint-arg", "x"], "--entrypoint"),
])
def test_image_assemble_usage_errors(tarred, tmp_path, args, what):
    if "-o" not in args:
        args = [*args, "-o", str(tmp_path / "img.tar")]
    assert what in fails("image-assemble", *args, input=tarred["gzip"], status=2)
    assert leftovers(tmp_path) == []


def test_relative_entrypoint_needs_one_root(tarred, tmp_path):
    recs = records(tarred["gzip"])
    for r in recs:
        if r["type"] == "path":
            r["root"] = True
    message = fails("image-assemble", "--entrypoint", "bin/app", "-o", str(tmp_path / "i.tar"),
                    input=ndjson(recs), status=2)
    assert "exactly one root" in message


def test_image_to_a_terminal_is_refused(tarred):
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([str(BIN / "image-assemble"), "-o", "-"], input=tarred["gzip"], stdout=slave,
                              stderr=subprocess.PIPE, timeout=60)
        os.close(slave)
        slave = None
        written = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and nothing is left
                break
            if not chunk:
                break
            written += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert one_line_error(proc, "image-assemble", 2) == \
        "refusing to write an image archive to a terminal; use -o FILE or a pipe"
    assert written == b""


def test_image_to_a_pipe_is_fine(tarred):
    proc = run_stage("image-assemble", "-o", "-", input=tarred["gzip"])
    assert proc.stdout[257:262] == b"ustar" and proc.stderr == b""


# -- closed pipes ------------------------------------------------------------------

def big_closure(n: int = 1500) -> bytes:
    paths = [make_store_path("/gnu/store", f"pkg{i}-1.0", "big") for i in range(n)]
    return graph_json(*((p, 1000 + i, paths[i + 1:i + 3]) for i, p in enumerate(paths)))


def run_into_closed_pipe(command: str, *args: str, input: bytes) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails with EPIPE
    try:
        return subprocess.run([str(BIN / command), *args], input=input, stdout=write_end,
                              stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)


def stage_inputs(tarred) -> dict:
    return {"closure-read": ([], big_closure()),
            "layer-split": ([], run_stage("closure-read", input=big_closure()).stdout),
            "layer-tar": (["--root", tarred["store"].root, "--blob-dir", str(tarred["tmp"] / "pipe")],
                          tarred["split"]),
            "image-assemble": (["-o", str(tarred["tmp"] / "pipe.tar")], tarred["gzip"])}


@pytest.mark.parametrize("command", STAGES)
def test_closed_stdout_ends_quietly_with_141(tarred, command):
    args, data = stage_inputs(tarred)[command]
    proc = run_into_closed_pipe(command, *args, input=data)
    assert (proc.returncode, proc.stderr) == (141, b"")


def test_image_stream_into_closed_pipe(tarred):
    proc = run_into_closed_pipe("image-assemble", "-o", "-", input=tarred["gzip"])
    assert (proc.returncode, proc.stderr) == (141, b"")


def test_head_closes_the_pipe_midway(tmp_path):
    """`closure-read big.json | head -c 10`: more output than a pipe holds, so
    closure-read meets the closed pipe while writing, not only at exit."""
    big = tmp_path / "big.json"
    big.write_bytes(big_closure())
    script = f'{BIN}/closure-read {big} 2>{tmp_path}/err | head -c 10; echo " ${{PIPESTATUS[0]}}"'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, timeout=60)
    assert proc.stdout.decode() == '{"type":"h 141\n'
    assert (tmp_path / "err").read_bytes() == b""


# -- signals ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """Two store items of 30 sparse 10 MB files each: 600 MB to tar, little disk."""
    root = tmp_path_factory.mktemp("big")
    paths = [make_store_path("/gnu/store", f"big{i}-1.0", "signals") for i in range(2)]
    for path in paths:
        item = root / path.lstrip("/")
        item.mkdir(parents=True)
        for n in range(30):
            with open(item / f"data{n:02d}", "wb") as f:
                for offset in range(0, 10 << 20, 1 << 20):
                    f.seek(offset)
                    f.write(os.urandom(64 << 10))
                f.truncate(10 << 20)
    layers = ndjson([{"type": "layer", "index": i, "paths": [p]} for i, p in enumerate(paths)])
    return root, layers


@pytest.mark.parametrize("sig, status, message", [(signal.SIGINT, 130, b"layer-tar: interrupted\n"),
                                                  (signal.SIGTERM, 143, b"")])
def test_signal_during_layer_tar(big_store, tmp_path, sig, status, message):
    root, layers = big_store
    blobs = tmp_path / "blobs"
    (tmp_path / "layers.ndjson").write_bytes(layers)
    with open(tmp_path / "layers.ndjson", "rb") as stdin:
        proc = subprocess.Popen([str(BIN / "layer-tar"), "--root", str(root), "--blob-dir", str(blobs), "--jobs", "2"],
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not glob.glob(str(blobs / "blobs" / "sha256" / ".tmp*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert proc.poll() is None, "layer-tar finished before the signal: make the store bigger"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert (proc.returncode, err) == (status, message)
    assert os.listdir(blobs / "blobs" / "sha256") == []   # no .tmp files, no half blobs
    assert b'"diff_id"' not in out
