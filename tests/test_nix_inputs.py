"""Real Nix closures (built offline by nix-bin) in the other forms Nix prints
them: `nix-store --dump-db` and closureInfo registrations, path lists read
with --scan, and --roots; the references found by scanning must be exactly
those Nix recorded when it built the items."""
import json
import subprocess

import pytest

from conftest import BIN, run_stage
from layerpipe.graph_formats import normalise_nar_hash
from test_nix_producers import _check_against_nix, _path_info, _records

pytestmark = pytest.mark.nix

# nixpkgs' closureInfo builder (pkgs/build-support/closure-info.nix), run on the real
# .attrs.json, whose graph attribute is called `graph` here rather than `closure`.
CLOSURE_INFO_REGISTRATION = ('.graph | map([.path, .narHash, .narSize, "", (.references | length)]'
                             ' + .references) | add | map("\\(.)\\n") | add')


def _jq(program: str, data: str) -> str:
    from tests.support.clients import require
    proc = subprocess.run([require("jq"), "-r", program], input=data, capture_output=True, text=True,
                          check=True, timeout=60)
    return proc.stdout


def _check_hashes(records: dict, nix_closure) -> None:
    for path, entry in _path_info(nix_closure).items():
        assert records[path]["narHash"] == normalise_nar_hash(entry["narHash"]), path


def test_dump_db_registration(nix_closure):
    """`nix-store --dump-db`: hex narHash, narSize and derivers, as Nix recorded them."""
    dump = nix_closure.nix("nix-store", "--dump-db", *nix_closure.paths)
    records = _records(run_stage("closure-read", input=dump.encode()))
    _check_against_nix(records, nix_closure)
    _check_hashes(records, nix_closure)
    info = _path_info(nix_closure)
    assert all(records[p]["deriver"] == info[p]["deriver"] for p in records)


def test_closure_info_registration_loads_in_nix_and_reads(nix_closure, tmp_path):
    """closureInfo's registration (its jq, then `head -n -1`) is what the real
    `nix-store --load-db` loads, and closure-read reads the same closure from it."""
    lines = _jq(CLOSURE_INFO_REGISTRATION, nix_closure.attrs_json).split("\n")
    registration = "\n".join(lines[:-2]) + "\n"  # head -n -1 of jq's output, which ends "\n\n"
    records = _records(run_stage("closure-read", input=registration.encode()))
    _check_against_nix(records, nix_closure)
    _check_hashes(records, nix_closure)
    from tests.support.nix import nix_env
    (tmp_path / "fresh").mkdir()
    env = nix_env(tmp_path / "fresh", True)[0]
    subprocess.run(["nix-store", "--load-db"], input=registration, env=env, text=True, check=True,
                   capture_output=True, timeout=60)
    loaded = subprocess.run(["nix-store", "--dump-db"], env=env, text=True, check=True,
                            capture_output=True, timeout=60).stdout
    _check_against_nix(_records(run_stage("closure-read", input=loaded.encode())), nix_closure)


def test_path_list_without_scan_is_refused(nix_closure):
    listing = nix_closure.nix("nix-store", "-qR", nix_closure.path)
    proc = run_stage("closure-read", input=listing.encode(), check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == ("closure-read: stdin: a list of store paths has no references: add --scan "
                                    "to find them in the items (under --root), or give a reference graph\n")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_scan_finds_exactly_the_references_nix_recorded(nix_closure, jobs):
    """`nix-store -qR` (and closureInfo's store-paths) with --scan: the references
    Nix recorded when it built the items, found again in their bytes."""
    for listing in (nix_closure.nix("nix-store", "-qR", nix_closure.path),
                    _jq(".graph[].path", nix_closure.attrs_json)):
        proc = run_stage("closure-read", "--scan", "-j", jobs, "--root", nix_closure.fs_root,
                         input=listing.encode())
        _check_against_nix(_records(proc), nix_closure)


def test_scan_in_worker_processes_agrees_with_nix(nix_closure):
    """The closure is small enough to be scanned in-process: force the pool too."""
    from layerpipe import scan
    from layerpipe.storepath import split_store_path
    paths = nix_closure.paths
    candidates = {split_store_path(p)[1].encode(): p for p in paths}
    found = scan.scan_references(paths, [str(nix_closure.real(p)) for p in paths], candidates, jobs=2)
    assert {p: sorted(r) for p, r in found.items()} == dict(nix_closure.references)


def test_scan_replaces_references_of_a_graph(nix_closure):
    """--scan on an input that has references: those found replace them."""
    graph = json.loads(nix_closure.path_info_json)
    for entry in graph:
        entry["references"] = []
    proc = run_stage("closure-read", "--scan", "--root", nix_closure.fs_root, input=json.dumps(graph).encode())
    _check_against_nix(_records(proc), nix_closure)


def test_roots_computes_the_closure_nix_recorded(nix_closure, tmp_path):
    """--roots from the root alone, among every item of the store (derivations,
    the graph and attrs outputs too), as a path, a list and a ./result link."""
    root = ["--root", nix_closure.fs_root]
    by_list = run_stage("closure-read", "--roots", *root, input=f"{nix_closure.path}\n".encode())
    _check_against_nix(_records(by_list), nix_closure)
    result = tmp_path / "result"
    result.symlink_to(nix_closure.path)
    by_link = run_stage("closure-read", "--roots", *root, str(result))
    assert by_link.stdout == by_list.stdout
    references = nix_closure.nix("nix-store", "-q", "--references", nix_closure.path)
    of_references = _records(run_stage("closure-read", "--roots", *root, input=references.encode()))
    assert sorted(of_references) == sorted(set(nix_closure.paths) - {nix_closure.path})


def _pipeline(nix_closure, tmp_path, first: str, input: bytes | None, tail: str = "") -> bytes:
    cmd = (f"{BIN}/{first} | {BIN}/layer-split"
           f" | {BIN}/layer-tar --root {nix_closure.fs_root} --blob-dir {tmp_path}/blobs{tail}")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], input=input, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_roots_pipeline_gives_the_layers_of_nix_json_and_runs(nix_closure, podman, tmp_path):
    """./result alone -> closure-read --roots -> ... -> a running image, whose
    layers are those the pipeline makes from `nix path-info --json -r`."""
    from tests.support.clients import podman_load, podman_run
    result = tmp_path / "result"
    result.symlink_to(nix_closure.path)
    from_json = _pipeline(nix_closure, tmp_path, "closure-read", nix_closure.path_info_json.encode())
    roots = f"closure-read --roots --root {nix_closure.fs_root} {result}"
    from_roots = _pipeline(nix_closure, tmp_path, roots, None)

    def diff_ids(out):
        return [r["diff_id"] for r in map(json.loads, out.splitlines()) if r["type"] == "layer"]
    assert diff_ids(from_roots) == diff_ids(from_json) and diff_ids(from_json)
    image = tmp_path / "hello.tar"
    _pipeline(nix_closure, tmp_path, roots, None,
              f" | {BIN}/image-assemble --tag nix-roots:1 --entrypoint bin/hello -o {image}")
    assert "hello from lib" in podman_run(podman, podman_load(podman, image))


# An item that names its dependencies in every way the NAR holds them: in a file's
# contents (across the 8 MiB boundary where --scan splits its reads), in the name of a
# directory entry, in a symlink's target; and a build input it does not name, which
# Nix therefore does not record.
EVERY_WAY_NIX = r"""
let
  mk = name: script: builtins.derivation {
    inherit name; builder = "/bin/busybox"; args = [ "sh" "-e" "-c" script ];
    system = builtins.currentSystem;
  };
  inContents = mk "in-contents" "echo a > $out";
  inName = mk "in-name" "echo b > $out";
  inLink = mk "in-link" "echo c > $out";
  unnamed = mk "unnamed" "echo d > $out";
  # the hash part starts 16 bytes before 8 MiB: 16 characters in one read, 16 in the next
  filler = toString (8388608 - 16 - builtins.stringLength builtins.storeDir - 1);
in mk "every-way" ''
  mkdir -p $out/names
  head -c ${filler} /dev/zero | tr '\000' . > $out/big
  printf '%s\n' ${inContents} >> $out/big
  touch "$out/names/$(basename ${inName})"
  ln -s ${inLink} $out/link
  test -e ${unnamed}
''
"""


def test_scan_agrees_with_nix_on_every_way_of_naming(nix_closure, tmp_path):
    from tests.support.clients import run_client
    from tests.support.nix import nix_env
    env, store_dir, fs_root = nix_env(tmp_path, nix_closure.sandboxed)
    (tmp_path / "every.nix").write_text(EVERY_WAY_NIX)
    out = run_client(["nix-build", "--no-out-link", tmp_path / "every.nix"], env=env, timeout=300).stdout.strip()
    recorded = sorted(run_client(["nix-store", "-q", "--references", out], env=env).stdout.split())
    named = {p.split("-", 1)[1]: p for p in recorded}
    assert sorted(named) == ["in-contents", "in-link", "in-name"]
    with open(f"{fs_root}/{out.lstrip('/')}/big", "rb") as f:
        start = f.read().index(named["in-contents"].encode()) + len(store_dir) + 1
    assert start < 8 << 20 < start + 32, "the hash part must span the boundary of two reads"
    listing = run_client(["nix-store", "-qR", out], env=env).stdout
    for jobs in ("1", "2"):
        records = _records(run_stage("closure-read", "--scan", "-j", jobs, "--root", fs_root, input=listing.encode()))
        assert records[out]["references"] == recorded
        assert all(records[p]["references"] == [] for p in recorded)
    rooted = _records(run_stage("closure-read", "--roots", "--root", fs_root, input=f"{out}\n".encode()))
    assert {p: r["references"] for p, r in rooted.items()} == {p: r["references"] for p, r in records.items()}
