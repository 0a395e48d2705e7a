"""A real OCI distribution registry (Debian's docker-registry 2.8) on 127.0.0.1, and its access log.

    with Registry.start(folder) as reg:      # plain HTTP on a free port, data and logs in FOLDER
        mark = reg.mark()
        ... skopeo copy --preserve-digests oci:DIR:TAG docker://{reg.host}/app:v2 ...
        push = reg.push_since(mark, "app", "v2")
        push.uploaded            # {digest: bytes the registry received for it}
        push.heads               # {digest: status of the last HEAD for it}: 200 = already there

What an update ships is read from the registry's access log (its stdout, Apache combined
format), not from the client: `HEAD /v2/<repo>/blobs/<digest>` answered 200 means the blob was
there and is not sent; a blob upload is `POST .../blobs/uploads/`, `PATCH <location>` with the
bytes, `PUT <location>&digest=<digest>` to commit. The log does not record request sizes, but
every upload location carries the registry's own upload state (`_state`: an HMAC, then JSON
with the byte `Offset` it has received so far), so the PUT's state tells how many bytes the
PATCHes brought. A PUT may carry bytes too; the registry then stores more than the Offset, and
the blob it commits has the digest's full size: tests compare the count with the blob sizes.

Plain Python (no pytest): bench/push.py uses it as well.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import daemons

CONFIG = """\
version: 0.1
log: {{level: warn, formatter: json}}
storage: {{filesystem: {{rootdirectory: {data}}}, delete: {{enabled: true}}}}
http: {{addr: "{host}", secret: layerpipe-tests}}
"""
# 127.0.0.1 - - [28/Nov/2026:04:09:32 +0000] "HEAD /v2/app/blobs/sha256:... HTTP/1.1" 200 0 "" "skopeo/1.9.3"
LINE = re.compile(r'^\S+ \S+ \S+ \[[^]]*\] "(?P<method>[A-Z]+) (?P<target>\S+) [^"]*" (?P<status>\d{3}) ')
MANIFEST_ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                             "application/vnd.docker.distribution.manifest.v2+json"])


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict
    status: int


@dataclass
class Push:
    """What one push did, read from the access log."""
    heads: dict = field(default_factory=dict)     # digest -> status of the last HEAD
    uploaded: dict = field(default_factory=dict)  # digest -> bytes received (PATCH offsets)
    mounted: list = field(default_factory=list)   # digests mounted from another repository
    manifests: list = field(default_factory=list)  # references PUT under /manifests/


def upload_offset(state: str) -> int:
    """Bytes received so far, from an upload location's `_state` (32 bytes of HMAC, then JSON)."""
    raw = base64.urlsafe_b64decode(state + "=" * (-len(state) % 4))
    return int(json.loads(raw[32:])["Offset"])


def parse_log(text: str) -> list[Request]:
    """The requests of an access log; lines that are not access lines are skipped."""
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            parts = urllib.parse.urlsplit(m["target"])
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
            out.append(Request(m["method"], urllib.parse.unquote(parts.path), query, int(m["status"])))
    return out


def summarise(requests: list[Request], repo: str) -> Push:
    """The blob checks, uploads, mounts and manifests of REPO among REQUESTS."""
    push, base = Push(), f"/v2/{repo}/"
    for r in requests:
        if not r.path.startswith(base):
            continue
        rest = r.path[len(base):]
        if r.method == "HEAD" and rest.startswith("blobs/sha256:"):
            push.heads[rest[len("blobs/"):]] = r.status
        elif r.method == "PUT" and rest.startswith("blobs/uploads/") and r.status == 201:
            digest = r.query["digest"]
            push.uploaded[digest] = push.uploaded.get(digest, 0) + upload_offset(r.query["_state"])
        elif r.method == "POST" and "mount" in r.query and r.status == 201:
            push.mounted.append(r.query["mount"])
        elif r.method == "PUT" and rest.startswith("manifests/") and r.status == 201:
            push.manifests.append(rest[len("manifests/"):])
    return push


class Registry:
    """A running docker-registry; see the module docstring."""

    def __init__(self, folder: Path, host: str):
        self.folder, self.host = folder, host
        self.access_log = folder / "access.log"

    @classmethod
    @contextlib.contextmanager
    def start(cls, folder: Path | None = None) -> Iterator["Registry"]:
        """Serve from FOLDER (default a new temp dir, removed afterwards) until the block ends."""
        own = folder is None
        folder = Path(tempfile.mkdtemp(prefix="lp-registry.")) if own else Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        reg = cls(folder, f"127.0.0.1:{daemons.free_port()}")
        config = folder / "config.yml"
        config.write_text(CONFIG.format(data=folder / "data", host=reg.host))
        try:
            with daemons.running("docker-registry", ["docker-registry", "serve", config],
                                 folder / "registry.log", reg.ready, stdout=reg.access_log):
                yield reg
        finally:
            if own:
                shutil.rmtree(folder, ignore_errors=True)

    def ready(self) -> bool:
        return self.get("/v2/")[0] == 200

    def ref(self, repo: str, tag: str) -> str:
        return f"docker://{self.host}/{repo}:{tag}"

    def get(self, path: str, accept: str | None = None) -> tuple[int, dict, bytes]:
        """GET http://HOST/PATH straight from the registry: (status, headers, body)."""
        req = urllib.request.Request(f"http://{self.host}{path}",
                                     headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def manifest(self, repo: str, reference: str) -> tuple[dict, bytes]:
        status, headers, body = self.get(f"/v2/{repo}/manifests/{reference}", MANIFEST_ACCEPT)
        if status != 200:
            raise AssertionError(f"registry: manifest {repo}:{reference}: HTTP {status}: {body[:300]!r}")
        return headers, body

    def blob(self, repo: str, digest: str) -> bytes:
        status, _, body = self.get(f"/v2/{repo}/blobs/{digest}")
        if status != 200:
            raise AssertionError(f"registry: blob {digest} of {repo}: HTTP {status}")
        return body

    def mark(self) -> int:
        """Where the access log ends now: push_since(mark, ...) reads what comes after."""
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def requests_since(self, mark: int) -> list[Request]:
        with self.access_log.open("rb") as f:
            f.seek(mark)
            return parse_log(f.read().decode(errors="replace"))

    def push_since(self, mark: int, repo: str, tag: str, timeout: float = 10) -> Push:
        """The push of REPO:TAG logged after MARK, once its manifest PUT is in the log (a
        request is logged just after its response, so it can trail the client's exit)."""
        deadline = time.monotonic() + timeout
        while True:
            push = summarise(self.requests_since(mark), repo)
            if tag in push.manifests or time.monotonic() > deadline:
                return push
            time.sleep(0.05)
