"""A private containerd, and `ctr` to import and run images in it (gzip and zstd layers).

The daemon keeps its root, state, sockets, plugins' files, runc state and stdio FIFOs in one
temp dir. It uses the `native` snapshotter (plain copies): overlayfs works on these machines,
but native works on any file system and checks the same things. `ctr images import` verifies
every blob's digest and, unpacking, every layer's diff_id against the config.

Register with ``pytest_plugins = ["tests.support.containerd"]`` (or import `containerd`).
"""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from . import daemons
from .clients import client_env, require, run_client

CONFIG = """\
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"""
_names = itertools.count()


@pytest.fixture(scope="session")
def containerd():
    """containerd on a private socket; yields the env dict for ctr (address, namespace, snapshotter)."""
    require("containerd")
    ctr = require("ctr")
    # A short folder in /tmp: unix socket paths must stay under 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="lp-containerd."))
    (d / "config.toml").write_text(CONFIG.format(d=d))
    env = client_env(CONTAINERD_ADDRESS=str(d / "containerd.sock"), CONTAINERD_NAMESPACE="layerpipe",
                     CONTAINERD_SNAPSHOTTER="native", LP_CONTAINERD_DIR=str(d))
    try:
        with daemons.running("containerd", ["containerd", "--config", d / "config.toml"],
                             d / "containerd.log", lambda: daemons.succeeds([ctr, "version"], env)):
            yield env
    finally:
        daemons.unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def ctr_import(env: dict, archive) -> str:
    """`ctr images import` an OCI layout tar or Docker archive; returns the first name imported."""
    out = run_client(["ctr", "images", "import", archive], env=env).stdout
    names = re.findall(r"^unpacking (\S+) \(sha256:[0-9a-f]{64}\)\.\.\.done$", out, flags=re.M)
    if not names:
        raise AssertionError(f"ctr images import {archive}: no image unpacked:\n{out}")
    return names[0]


def ctr_pull(env: dict, ref: str) -> str:
    """`ctr images pull --plain-http REF` (a registry on loopback) and unpack it; returns REF."""
    run_client(["ctr", "images", "pull", "--plain-http", ref], env=env)
    return ref


def ctr_run(env: dict, image: str) -> str:
    """`ctr run --rm IMAGE ID`: the image's entry point and command, in a network namespace
    with loopback only; returns stdout. (Arguments after ID would replace the entry point as
    well as the command, unlike docker's and podman's, so there are none.)"""
    d = Path(env["LP_CONTAINERD_DIR"])
    name = f"layerpipe-{next(_names)}"
    return run_client(["ctr", "run", "--rm", "--fifo-dir", d / "fifo", "--runc-root", d / "runc",
                       image, name], env=env).stdout
