import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO))

from tests.support.store import build_store  # noqa: E402

BIN = REPO / "bin"


def run_stage(command: str, *args: str, input: bytes | None = None, check: bool = True,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one of bin/ as a user would, through a real pipe."""
    proc = subprocess.run([str(BIN / command), *args], input=input, capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc


@pytest.fixture
def store(tmp_path):
    return build_store(str(tmp_path / "root"))


# Fixtures for real clients and real Nix closures (session-scoped daemons).
from tests.support.clients import dockerd, podman, registry  # noqa: E402,F401
from tests.support.containerd import containerd  # noqa: E402,F401
from tests.support.nix import nix_closure  # noqa: E402,F401


def pytest_terminal_summary(terminalreporter):
    from tests.support.counts import summary
    summary(terminalreporter)
