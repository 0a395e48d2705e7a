"""The root profile: default name and Env as `guix pack -f docker` makes them
(a hand-made Guix profile with a manifest in Guix's format), and what a real
Nix profile (made offline by nix-env) allows; the s-expression reader."""
import json
import subprocess
import tarfile

import pytest

from conftest import BIN, run_stage
from tests.support.clients import run_client
from tests.support.guix_profile import build_guix_profile

from layerpipe import sexp
from layerpipe.errors import LayerpipeError
from layerpipe.profile import friendly_name, guix_manifest, nix_manifest_json, nix_manifest_names


def _image(records: bytes, tmp_path, *args) -> tuple[dict, dict]:
    out = run_stage("image-assemble", "-o", str(tmp_path / "img.tar"), *args, input=records).stdout
    image = json.loads(out.splitlines()[-1])
    with tarfile.open(image["output"]) as tar:
        config = json.load(tar.extractfile("blobs/sha256/" + image["image_id"][7:]))
    return image, config


def _tarred(graph_or_input: str, root: str, tmp_path) -> bytes:
    cmd = (f"{BIN}/closure-read --root {root} {graph_or_input} | {BIN}/layer-split"
           f" | {BIN}/layer-tar --root {root} --blob-dir {tmp_path}/blobs")
    proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@pytest.fixture
def guix(tmp_path):
    store = build_guix_profile(str(tmp_path / "root"))
    return store, _tarred(store.write_graph(str(tmp_path / "graph.refs")), store.root, tmp_path)


def test_guix_profile_name_and_env(guix, tmp_path):
    store, records = guix
    image, config = _image(records, tmp_path, "--entrypoint", "bin/guile")
    p = store.paths["profile"]
    assert image["tags"] == ["guile-hello-nss-certs-docbook-xml:latest"]  # the long name dropped: < 40
    assert config["config"]["Env"] == [
        f"PATH={p}/bin",  # no sbin
        f"GUILE_LOAD_PATH={p}/share/guile/site/3.0",
        f"GUILE_LOAD_COMPILED_PATH={p}/lib/guile/3.0/site-ccache:{p}/share/guile/site/3.0",
        # GUILE_EXTENSIONS_PATH: no such directory, so no variable
        f"SSL_CERT_DIR={p}/etc/ssl/certs",  # separator #f: the first match alone
        f"SSL_CERT_FILE={p}/etc/ssl/certs/ca-certificates.crt",
        f"XML_CATALOG_FILES={p}/xml/dtd/docbook/catalog.xml",  # pattern, through the xml link
    ]
    assert config["config"]["Entrypoint"] == [f"{p}/bin/guile"]


def test_env_option_overrides_the_profile_in_place(guix, tmp_path):
    _, records = guix
    _, config = _image(records, tmp_path, "-e", "GUILE_LOAD_PATH=/x", "-e", "LANG=C", "-t", "mine:1")
    env = config["config"]["Env"]
    assert env[1] == "GUILE_LOAD_PATH=/x" and env[-1] == "LANG=C"


@pytest.mark.parametrize("text, stderr", [
    ('(manifest (version 4) (packages (("x"', "unbalanced"),  # a Guix manifest, broken: a warning
    ("name: my-app\nversion: 2\n", ""),  # another program's file: no profile, no warning
])
def test_unreadable_manifest_is_left_aside(tmp_path, text, stderr):
    store = build_guix_profile(str(tmp_path / "root"))
    with open(store.fs(store.paths["profile"]) + "/manifest", "w") as f:
        f.write(text)
    records = _tarred(store.write_graph(str(tmp_path / "graph.refs")), store.root, tmp_path)
    proc = run_stage("image-assemble", "-o", str(tmp_path / "i.tar"), input=records)
    err = proc.stderr.decode()
    assert (stderr in err and err.startswith("image-assemble: warning: ")) if stderr else err == ""
    assert json.loads(proc.stdout.splitlines()[-1])["tags"] == ["profile:latest"]


@pytest.mark.nix
def test_real_nix_env_profile(nix_closure, tmp_path):
    """nix-env builds a real profile (buildEnv, with manifest.nix) offline."""
    run_client(["nix-env", "-p", str(tmp_path / "prof"), "-i", nix_closure.path], env=nix_closure.env)
    profile = (tmp_path / "prof-1-link").readlink().as_posix()
    (tmp_path / "pi.json").write_text(nix_closure.nix("nix", "path-info", "--json", "-r", profile))
    records = _tarred(str(tmp_path / "pi.json"), nix_closure.fs_root, tmp_path)
    image, config = _image(records, tmp_path, "--entrypoint", "bin/hello")
    assert image["tags"] == ["hello:latest"]
    assert config["config"]["Env"] == [f"PATH={profile}/bin"]


def test_friendly_name_is_guix_s():
    assert friendly_name(["a" * 39]) == "a" * 39
    assert friendly_name(["a" * 45]) == "a" * 45  # one name is kept whole
    assert friendly_name(["a" * 20, "b" * 19]) == "a" * 20  # 40 characters: too long
    assert friendly_name(["a" * 20, "b" * 18]) == "a" * 20 + "-" + "b" * 18


def test_nix_manifests():
    assert nix_manifest_names('[ { meta = { name = "no"; }; name = "hello-2.12"; pname = "hello"; } '
                              '{ name = "coreutils-9.1"; outputs = [ "out" ]; } ]') == ["hello", "coreutils"]
    v2 = json.dumps({"version": 2, "elements": [{"attrPath": "legacyPackages.x86_64-linux.jq",
                                                 "storePaths": ["/nix/store/" + "a" * 32 + "-jq-1.6"]},
                                                {"storePaths": ["/nix/store/" + "b" * 32 + "-curl-8.0"]}]})
    assert nix_manifest_json(v2.encode(), "m").names == ["jq", "curl"]
    v3 = json.dumps({"version": 3, "elements": {"jq": {}, "ripgrep": {}}})
    assert nix_manifest_json(v3.encode(), "m").names == ["jq", "ripgrep"]


def test_old_manifest_versions():
    v1 = '(manifest (version 1) (packages (("guile" "2.0" "out" "/gnu/store/x-guile" ()))))'
    assert guix_manifest(v1, "m").names == ["guile"] and len(guix_manifest(v1, "m").search_paths) == 1
    with pytest.raises(LayerpipeError, match="unsupported version"):
        guix_manifest("(manifest (version 9) (packages ()))", "m")


def test_sexp_reader():
    assert sexp.read('(a "b\\"c\\x41;" 12 #t #f #:k (d . (e f)) \'g) ; tail') == \
        ["a", 'b"cA', 12, True, False, "k", ["d", "e", "f"], ["quote", "g"]]
    assert isinstance(sexp.read("(a)")[0], sexp.Symbol) and not isinstance(sexp.read('("a")')[0], sexp.Symbol)
    for bad in ("(a", ")", '("abc)', "(#<procedure>)", "(" * 300 + ")" * 300):
        with pytest.raises(LayerpipeError):
            sexp.read(bad)
