"""A small, real Nix store closure built offline with Debian's nix-bin (Nix 2.8).

The closure of `hello` has four store paths and a genuine reference chain:

    hello ──> app ──> lib ──> lib (a self-reference: lib/share/self holds its own path)
               └────> busybox (a static busybox and its `sh` symlink; no references)

hello/bin/hello is a symlink to app/bin/app, an executable `#!busybox/bin/sh` script that cats
lib/share/greeting; app/share/lib is a symlink to lib. Busybox in the closure means an image made
from it runs `/nix/store/...-hello/bin/hello` without any base image.

Register with ``pytest_plugins = ["tests.support.nix"]`` (or import `nix_closure`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import pytest

from .clients import require, run_client

# builder = busybox: inside a build PATH is "/path-not-set", and busybox runs its own applets.
# Two derivations capture what Nix hands builders that use exportReferencesGraph: the text
# graph file, and (with __structuredAttrs) .attrs.json. Nix 2.8 points NIX_ATTRS_JSON_FILE at
# the host's build dir, wrong inside the sandbox, so read .attrs.json from the working dir; and
# $out is not in the environment with structured attrs, only in .attrs.sh as a bash array
# (which busybox sh cannot source), hence the sed.
CLOSURE_NIX = r"""
let
  mk = name: script: attrs: builtins.derivation ({
    inherit name; builder = "/bin/busybox"; args = [ "sh" "-e" "-c" script ];
    system = builtins.currentSystem;
  } // attrs);
  busybox = mk "busybox" ''
    mkdir -p $out/bin; cp /bin/busybox $out/bin/busybox; ln -s busybox $out/bin/sh
  '' {};
  lib = mk "lib" ''
    mkdir -p $out/share; echo hello from lib > $out/share/greeting; echo $out > $out/share/self
  '' {};
  app = mk "app" ''
    mkdir -p $out/bin $out/share
    printf '#!${busybox}/bin/sh\nexec ${busybox}/bin/busybox cat ${lib}/share/greeting\n' \
      > $out/bin/app
    chmod 0755 $out/bin/app
    ln -s ${lib} $out/share/lib
  '' {};
  hello = mk "hello" ''
    mkdir -p $out/bin; ln -s ${app}/bin/app $out/bin/hello; echo plain > $out/README
  '' {};
  graph = mk "graph" "mkdir $out; cp graph $out/graph" {
    exportReferencesGraph = [ "graph" hello ];
  };
  attrs = mk "attrs" ''
    out=$(sed -n "s/.*\['out'\]='\([^']*\)'.*/\1/p" .attrs.sh)
    mkdir $out; cp .attrs.json $out/attrs.json
  '' { __structuredAttrs = true; exportReferencesGraph.graph = [ hello ]; };
in { inherit hello graph attrs; }
"""

BASE_CONFIG = ("substituters =\n"  # no internet: never try cache.nixos.org
               "build-users-group =\n"  # single-user store owned by whoever runs the tests
               "experimental-features = nix-command\n")


@dataclasses.dataclass(frozen=True)
class NixClosure:
    path: str  # the root store path (hello's output)
    store_dir: str  # logical store dir: "/nix/store", or <tmp>/store without a sandbox
    fs_root: str  # where paths physically live: fs_root + path ("/" when logical == physical)
    env: dict  # environment for nix / nix-store / nix-build against this store
    sandboxed: bool
    path_info_json: str  # `nix path-info --json -r PATH`: a JSON list, narHash in SRI form
    graph_text: str  # an exportReferencesGraph text file: path, deriver, count, references
    attrs_json: str  # .attrs.json of a structured-attrs build (narHash "sha256:<nix32>")
    references: list  # [(path, [references...])] as `nix-store -q --references` reports

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.references]

    def real(self, store_path: str) -> Path:
        """Where a store path's files are on this machine."""
        return _real(self.fs_root, store_path)

    def nix(self, *argv: str) -> str:
        """Run nix, nix-store, ... against this store; returns stdout."""
        return _query(self.env, *argv)


def nix_env(tmp: Path, sandboxed: bool) -> tuple[dict, str, str]:
    """(env, store_dir, fs_root) for a private store under `tmp`.

    Sandboxed: NIX_REMOTE='local?root=TMP' keeps the standard /nix/store paths (so hashes are
    the same on every machine and match real images) while files live under TMP/nix/store; the
    sandbox bind-mounts them at /nix/store for builders. Without a sandbox (no namespaces) the
    builder must see its $out at the logical path, so the store dir itself moves under TMP.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIX_")}
    env.update(NIX_CONF_DIR=str(tmp / "etc"), NIX_USER_CONF_FILES=str(tmp / "etc" / "none"),
               XDG_CACHE_HOME=str(tmp / "cache"))  # ignore the machine's and user's nix.conf
    if sandboxed:
        env["NIX_CONFIG"] = BASE_CONFIG + ("sandbox = true\nsandbox-fallback = false\n"
                                           "sandbox-paths = /bin/sh=/bin/busybox /bin/busybox\n")
        env["NIX_REMOTE"] = f"local?root={tmp}"
        return env, "/nix/store", str(tmp)
    env["NIX_CONFIG"] = BASE_CONFIG + "sandbox = false\n"
    env.update(NIX_STORE_DIR=str(tmp / "store"), NIX_STATE_DIR=str(tmp / "var"),
               NIX_LOG_DIR=str(tmp / "log"))
    return env, str(tmp / "store"), "/"


def _real(fs_root: str, store_path: str) -> Path:
    return Path(fs_root) / store_path.lstrip("/")


def _query(env: dict, *argv: str) -> str:
    return run_client(list(argv), env=env).stdout


def _record(env: dict, store_dir: str, fs_root: str, sandboxed: bool,
            hello: str, graph: str, attrs: str) -> NixClosure:
    requisites = sorted(_query(env, "nix-store", "-q", "--requisites", hello).split())
    references = [(p, sorted(_query(env, "nix-store", "-q", "--references", p).split()))
                  for p in requisites]
    return NixClosure(
        path=hello, store_dir=store_dir, fs_root=fs_root, env=env, sandboxed=sandboxed,
        path_info_json=_query(env, "nix", "path-info", "--json", "-r", hello),
        graph_text=(_real(fs_root, graph) / "graph").read_text(),
        attrs_json=(_real(fs_root, attrs) / "attrs.json").read_text(), references=references)


def build_closure(tmp: Path) -> NixClosure:
    """Build the closure under `tmp`: in the Nix sandbox if this machine allows one, else not."""
    require("nix-build")
    require("/bin/busybox")  # the builder of every derivation (busybox-static)
    errors = []
    for sandboxed in (True, False):
        store = tmp / ("sandboxed" if sandboxed else "plain")
        store.mkdir()
        env, store_dir, fs_root = nix_env(store, sandboxed)
        (store / "closure.nix").write_text(CLOSURE_NIX)
        try:
            outs = run_client(["nix-build", "--no-out-link", store / "closure.nix", "-A", "hello",
                               "-A", "graph", "-A", "attrs"], env=env, timeout=300).stdout
        except AssertionError as exc:
            errors.append(str(exc))
            continue
        if errors:  # say why the store paths are not the usual /nix/store ones
            warnings.warn(f"nix sandbox unavailable, building without it:\n{errors[0]}")
        return _record(env, store_dir, fs_root, sandboxed, *outs.split())
    raise AssertionError("\n".join(errors))


@pytest.fixture(scope="session")
def nix_closure(tmp_path_factory) -> NixClosure:
    return build_closure(tmp_path_factory.mktemp("nix"))
