"""closure-read's inputs through the real command: store directories (Guix's,
Nix's, any other), mixtures refused in every format, and the errors of
--scan and --roots: one line each, with the documented exit status."""
import json

import pytest

from conftest import run_stage
from layerpipe.storepath import make_store_path
from test_errors import fails

OTHER = "/opt/guix/store"
GUIX = [make_store_path("/gnu/store", n, "dirs") for n in ("a-1", "b-1")]
NIX = [make_store_path("/nix/store", n, "dirs") for n in ("a-1", "b-1")]
ELSEWHERE = [make_store_path(OTHER, n, "dirs") for n in ("a-1", "b-1")]
HEX = "0" * 64


def graph(a: str, b: str) -> str:
    """A text graph: A refers to B."""
    return f"{a}\n\n1\n{b}\n{b}\n\n0\n"


def registration(a: str, b: str) -> str:
    return f"{a}\n{HEX}\n8\n\n1\n{b}\n{b}\n{HEX}\n8\n\n0\n"


def records(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("paths", [GUIX, NIX, ELSEWHERE], ids=["guix", "nix", "other"])
@pytest.mark.parametrize("how", ["graph", "registration", "scan", "roots"])
def test_each_store_directory_is_read_and_named_in_the_header(paths, how, tmp_path):
    """On disk, A is a file that names B; B is an empty file."""
    a, b = paths
    (tmp_path / a.lstrip("/")).parent.mkdir(parents=True)
    (tmp_path / a.lstrip("/")).write_text(f"uses {b}/bin\n")
    (tmp_path / b.lstrip("/")).write_text("")
    data = {"graph": graph(a, b), "registration": registration(a, b), "scan": f"{b}\n{a}\n",
            "roots": f"{a}\n"}[how]
    flags = {"scan": ["--scan"], "roots": ["--roots"]}.get(how, [])
    store_dir = a.rpartition("/")[0]
    out = run_stage("closure-read", "--root", str(tmp_path), "--store-dir", store_dir, *flags,
                    input=data.encode()).stdout
    header, *items = records(out)
    assert header["store_dir"] == store_dir
    assert [(r["path"], r["references"]) for r in items] == sorted([(a, [b]), (b, [])])


@pytest.mark.parametrize("make, where", [(graph, "stdin:4"), (registration, "stdin:6")])
@pytest.mark.parametrize("first, second", [(GUIX, NIX), (NIX, GUIX), (NIX, ELSEWHERE)])
def test_a_reference_into_another_store_directory_is_refused(make, where, first, second):
    """A refers to B of another store, which is listed too."""
    data = make(first[0], second[1])
    message = fails("closure-read", input=data.encode())
    store_dir = first[0].rpartition("/")[0]
    assert message.endswith(f"{second[1]}: outside the store directory {store_dir}")


def test_a_path_list_mixing_store_directories_is_refused_before_scanning():
    message = fails("closure-read", "--scan", "--root", "/nonexistent", input=f"{GUIX[0]}\n{NIX[0]}\n".encode())
    assert message == f"stdin:2: {NIX[0]}: outside the store directory /gnu/store"


def test_store_dir_option_that_the_input_does_not_match():
    message = fails("closure-read", "--store-dir", "/nix/store", input=graph(*GUIX).encode())
    assert message == f"stdin:1: {GUIX[0]}: outside the store directory /nix/store"


@pytest.mark.parametrize("args, message", [
    (["--roots", "--format", "text"], "--roots reads a list of store paths: --format must be auto or paths"),
    (["--scan", "--jobs", "-1"], "--jobs must be 0 (all CPUs) or more"),
])
def test_usage_errors(args, message):
    assert fails("closure-read", *args, input=b"", status=2) == message


def test_scan_of_an_item_that_is_not_on_disk(tmp_path):
    message = fails("closure-read", "--scan", "--root", str(tmp_path), input=f"{GUIX[0]}\n".encode())
    assert message == f"stdin:1: {GUIX[0]}: no such store item (looked in {tmp_path}; narSize is not in the " \
                      "input, so it is computed from disk)"
    data = registration(*GUIX).encode()  # narSize given: scanning still reads every item
    message = fails("closure-read", "--scan", "--root", str(tmp_path), input=data)
    assert message == f"stdin:1: {GUIX[0]}: no such store item (looked in {tmp_path}; scanning reads every item)"


def test_roots_without_a_store_directory(tmp_path):
    message = fails("closure-read", "--roots", "--root", str(tmp_path), input=f"{GUIX[0]}\n".encode())
    assert message == f"{tmp_path}/gnu/store: cannot list the store directory: No such file or directory"


def test_roots_that_are_not_a_path_list(tmp_path):
    (tmp_path / "gnu" / "store").mkdir(parents=True)
    message = fails("closure-read", "--roots", "--root", str(tmp_path), input=graph(*GUIX).encode())
    assert message == "stdin:3: '1': not a store path (expected <store dir>/<hash>-<name>)"
