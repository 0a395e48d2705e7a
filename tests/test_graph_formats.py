"""graph_formats: the closure descriptions Guix and Nix write, and narHash spellings."""
import base64
import hashlib
import io
import json
from pathlib import Path

import pytest

from layerpipe.errors import LayerpipeError
from layerpipe.graph_formats import detect, normalise_nar_hash, read_json, read_paths, read_text, sniff
from layerpipe.storepath import nix32_encode

GOLDEN = Path(__file__).resolve().parent / "golden" / "closure-read"
A = "/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-a"
B = "/nix/store/1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-b"
DIGEST = hashlib.sha256(b"some nar").digest()
HEX = "sha256:" + DIGEST.hex()


# -- narHash ----------------------------------------------------------------

@pytest.mark.parametrize("spelling", [
    "sha256-" + base64.b64encode(DIGEST).decode(),   # SRI, as Nix >= 2.4 prints
    "sha256:" + nix32_encode(DIGEST),                 # Nix's own, as structured attrs have it
    "sha256:" + DIGEST.hex(),                         # hex, as Guix's database has it
    "sha256:" + base64.b64encode(DIGEST).decode(),    # base64, which nix-store --load-db takes
    nix32_encode(DIGEST),                             # bare nix-base32
    DIGEST.hex(),                                     # bare hex
])
def test_nar_hash_spellings_normalise_to_sha256_hex(spelling):
    assert normalise_nar_hash(spelling) == HEX


def test_nar_hash_of_empty_nar_vector():
    assert normalise_nar_hash("sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73") == \
        "sha256:" + hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("bad", [
    "md5:" + "0" * 32,
    "sha1-" + base64.b64encode(bytes(20)).decode(),
    "sha256-" + base64.b64encode(bytes(31)).decode(),   # SRI of the wrong length
    "sha256-not*base64",
    "sha256:" + "0" * 63,
    "sha256:" + "e" * 52,                              # 'e' is not nix-base32
    "sha256:" + "Z" * 64,
    "",
    42,
])
def test_bad_nar_hashes_are_refused(bad):
    with pytest.raises(ValueError):
        normalise_nar_hash(bad)


def test_real_sri_and_nix32_hashes_of_the_same_paths_agree():
    """Nix 2.8 wrote the same closure twice: path-info in SRI, .attrs.json in
    sha256:<nix-base32>; both must decode to the same digests."""
    sri = {e["path"]: e["narHash"] for e in json.loads((GOLDEN / "nix-2.8-json-list" / "path-info.json").read_text())}
    attrs = json.loads((GOLDEN / "nix-structured-attrs" / "attrs.json").read_text())
    nix32 = {e["path"]: e["narHash"] for e in attrs["graph"]}
    assert sri.keys() == nix32.keys() and len(sri) == 4
    assert all(sri[p].startswith("sha256-") and nix32[p].startswith("sha256:") for p in sri)
    assert {p: normalise_nar_hash(h) for p, h in sri.items()} == {p: normalise_nar_hash(h) for p, h in nix32.items()}


# -- detection --------------------------------------------------------------

@pytest.mark.parametrize("head, kind", [
    (b"[{", "json-list"), (b"  \n{\"/nix", "json-object"),
    (f"{A}\n\n0\n".encode(), "text"),                       # no deriver
    (f"{A}\n{A}.drv\n1\n{B}\n".encode(), "text"),           # a deriver, then the count
    (f"{A}\n{HEX}\n96\n\n0\n".encode(), "registration"),   # nix-store --dump-db
    (f"{A}\n{DIGEST.hex()}\n96\n\n0\n".encode(), "registration"),
    (f"{A}\n".encode(), "paths"), (A.encode(), "paths"),     # one path, with or without newline
    (f"{A}\n{B}\n".encode(), "paths"), (f"{A}\n{B}\n{A}\n".encode(), "paths"),
    (f"\n\n{A}\n{B}\n".encode(), "paths"), (f"{A}\n\n\n".encode(), "paths"),
])
def test_detect(head, kind):
    assert detect(head) == kind


def test_sniff_reads_whole_lines_and_gives_them_back():
    data = f"{A}\n\n1\n{B}\n{B}\n\n0\n".encode()
    stream = io.BufferedReader(io.BytesIO(data), buffer_size=8)  # shorter than a line
    head, kind = sniff(stream)
    assert kind == "text" and b"".join(head) + stream.read() == data


@pytest.mark.parametrize("head, message", [(b"", "empty input"), (b"  \n\t", "empty input"),
                                            (b"hello", "unrecognised input")])
def test_detect_refuses(head, message):
    with pytest.raises(LayerpipeError, match=message):
        detect(head)


# -- text -------------------------------------------------------------------

def text(data: str, name: str = "graph.refs"):
    return list(read_text(io.BytesIO(data.encode()), name))


def test_text_graph_with_derivers_and_self_reference():
    entries = text(f"{A}\n/nix/store/2mdqa9w1p6cmli6976v4wi0sw9r4p5pr-a.drv\n2\n{A}\n{B}\n{B}\n\n0\n")
    assert [e.path for e in entries] == [A, B]
    assert entries[0].deriver.endswith("-a.drv") and entries[1].deriver is None
    assert entries[0].references == [(A, "graph.refs:4"), (B, "graph.refs:5")]
    assert entries[0].where == "graph.refs:1" and entries[1].where == "graph.refs:6"
    assert entries[0].narSize is None


def test_text_graph_blank_lines_between_entries_are_skipped():
    assert [e.path for e in text(f"{A}\n\n0\n\n\n{B}\n\n0\n")] == [A, B]


@pytest.mark.parametrize("registration, data, where, what", [
    (False, f"{A}\n", "graph.refs:end", "deriver line"),
    (False, f"{A}\n\n", "graph.refs:end", "reference count"),
    (False, f"{A}\n\n2\n{B}\n", "graph.refs:end", "reference"),
    (False, f"{A}\n\nmany\n", "graph.refs:3", "reference count"),
    (False, f"{A}\n\n-1\n", "graph.refs:3", "reference count"),
    (True, f"{A}\nmd5:{'0' * 32}\n96\n\n0\n", "graph.refs:2", "NAR hash: unsupported hash algorithm"),
    (True, f"{A}\n{HEX}\nlarge\n\n0\n", "graph.refs:3", "expected a NAR size, got 'large'"),
    (True, f"{A}\n{HEX}\n", "graph.refs:end", "NAR size"),
    (True, f"{A}\n{HEX}\n96\n", "graph.refs:end", "deriver line"),
    (True, f"{A}\n{HEX}\n96\n\n1\n", "graph.refs:end", "reference"),
])
def test_text_graph_and_registration_errors_name_file_and_line(registration, data, where, what):
    with pytest.raises(LayerpipeError) as info:
        list(read_text(io.BytesIO(data.encode()), "graph.refs", registration))
    assert info.value.where == where and what in info.value.message


def test_text_graph_not_utf8_names_the_line():
    with pytest.raises(LayerpipeError) as info:
        list(read_text(io.BytesIO(f"{A}\n\n1\n".encode() + b"/nix/store/\xff\n"), "g"))
    assert info.value.where == "g:4" and "UTF-8" in info.value.message


@pytest.mark.parametrize("count", ["\u00b2", "\u0663", "\uff11"])  # superscript 2, Arabic-Indic 3, fullwidth 1
def test_text_graph_unicode_digit_count_is_a_clean_error(count):
    """str.isdigit() takes these; int() does not take all of them."""
    with pytest.raises(LayerpipeError, match="reference count"):
        text(f"{A}\n\n{count}\n{B}\n{B}\n\n0\n")


# -- registration and path lists ----------------------------------------------

def test_registration_dump_db():
    data = f"{A}\n{DIGEST.hex()}\n96\n{A}.drv\n2\n{A}\n{B}\n{B}\n{HEX}\n120\n\n0\n"
    entries = list(read_text(io.BytesIO(data.encode()), "dump", registration=True))
    assert [(e.path, e.narHash, e.narSize, e.deriver) for e in entries] == [
        (A, HEX, 96, A + ".drv"), (B, HEX, 120, None)]
    assert entries[0].references == [(A, "dump:6"), (B, "dump:7")]
    assert entries[1].where == "dump:8"


def test_path_list_skips_blank_lines_and_names_lines():
    entries = list(read_paths(io.BytesIO(f"\n{A}\n  \n{B}\n".encode()), "list"))
    assert [(e.path, e.where, e.references) for e in entries] == [(A, "list:2", []), (B, "list:4", [])]


# -- JSON -------------------------------------------------------------------

def js(doc, fmt="auto", attr=None, name="in.json"):
    return list(read_json(json.dumps(doc).encode(), name, fmt, attr))


def test_json_list_nix_2_8():
    sri = "sha256-" + base64.b64encode(DIGEST).decode()
    entries = js([{"path": A, "narHash": sri, "narSize": 120, "references": [A, B], "deriver": "/nix/store/x.drv",
                   "registrationTime": 1, "ultimate": True},
                  {"path": B, "narSize": 8, "references": []}])
    assert entries[0].narHash == HEX and entries[0].narSize == 120 and entries[0].deriver == "/nix/store/x.drv"
    assert entries[0].where == "in.json: entry 0" and entries[1].where == "in.json: entry 1"
    assert [r for r, _ in entries[0].references] == [A, B]
    assert entries[1].narHash is None


def test_json_object_form_nix_2_19():
    entries = js({B: {"narSize": 8, "references": [], "ca": None, "signatures": []},
                  A: {"narSize": 120, "references": [B]}})
    assert {e.path: e.narSize for e in entries} == {A: 120, B: 8}
    assert {e.where for e in entries} == {f"in.json: {A}", f"in.json: {B}"}


def test_json_object_form_refuses_invalid_paths():
    with pytest.raises(LayerpipeError, match="no information"):
        js({A: None})
    with pytest.raises(LayerpipeError, match="not a valid store path"):
        js([{"path": A, "valid": False}])


def test_structured_attrs_graph_found_by_shape():
    doc = {"name": "x", "exportReferencesGraph": {"closure": [A]}, "outputs": {"out": "/nix/store/y"},
           "closure": [{"path": A, "narSize": 1, "references": []}], "other": [1, 2]}
    entries = js(doc)
    assert [e.path for e in entries] == [A] and entries[0].where == "in.json: closure[0]"


def test_structured_attrs_two_graphs_need_attr():
    doc = {"one": [{"path": A, "references": []}], "two": [{"path": B, "references": []}]}
    with pytest.raises(LayerpipeError, match="use --attr"):
        js(doc)
    assert [e.path for e in js(doc, attr="two")] == [B]
    with pytest.raises(LayerpipeError, match="no reference graph under attribute 'three'"):
        js(doc, attr="three")


def test_format_mismatch_is_refused():
    with pytest.raises(LayerpipeError, match="found a JSON list"):
        js([{"path": A, "references": []}], fmt="json-object")
    with pytest.raises(LayerpipeError, match="found a JSON object"):
        js({A: {"references": []}}, fmt="json-list")


@pytest.mark.parametrize("entry, message", [
    ({"path": A, "references": "B"}, "references"),
    ({"path": 7, "references": []}, "path"),
    ({"references": []}, "path"),
    ({"path": A, "references": [1]}, "references"),
    ({"path": A, "references": [], "narSize": -1}, "narSize"),
    ({"path": A, "references": [], "narSize": True}, "narSize"),
    ({"path": A, "references": [], "narSize": 1.5}, "narSize"),
    ({"path": A, "references": [], "narHash": "md5:00"}, "narHash"),
])
def test_bad_json_entries_are_refused_with_where(entry, message):
    with pytest.raises(LayerpipeError) as info:
        js([{"path": B, "references": []}, entry])
    assert message in info.value.message and info.value.where == "in.json: entry 1"


def test_invalid_json_names_the_input():
    with pytest.raises(LayerpipeError) as info:
        list(read_json(b"[{", "stdin", "auto", None))
    assert info.value.where == "stdin" and "invalid JSON" in info.value.message


def test_json_scalar_is_refused():
    with pytest.raises(LayerpipeError, match="list or object"):
        js("just a string")


def test_closure_info_files_are_told_apart():
    """closureInfo's two files, as its jq writes them (golden nix-closure-info)."""
    folder = GOLDEN / "nix-closure-info"
    assert detect((folder / "registration").read_bytes()) == "registration"
    assert detect((folder / "store-paths").read_bytes()) == "paths"
    paths = [e.path for e in read_paths(io.BytesIO((folder / "store-paths").read_bytes()), "store-paths")]
    registered = read_text(io.BytesIO((folder / "registration").read_bytes()), "registration", True)
    assert paths == [e.path for e in registered] and len(paths) == 4
