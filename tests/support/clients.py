"""Check images with real, independent clients: skopeo, umoci, oci-image-tool, docker, podman.

Fixtures: `dockerd` and `podman` (private, no network), `registry` (docker-registry on
127.0.0.1, see registry.py); containerd.py adds `containerd`.

Every helper raises AssertionError naming the command and quoting its stderr, so a failing test
shows what the client objected to. Tools are found with require(): a missing tool skips the test
on a workstation but fails it in CI (env CI set), where .ci/run installs them.

Register the fixtures from a conftest.py with ``pytest_plugins = ["tests.support.clients"]``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from . import daemons
from .registry import Registry

TIMEOUT = 120  # seconds per client call: ample on a 2-core CI machine, and no test hangs forever

# Media types by role. Docker's are listed because skopeo keeps them when copying into a layout.
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"}
CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.container.image.v1+json"}


def missing(msg: str) -> None:
    """Skip the test for want of MSG's tool or data, or fail in CI where it must be there."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def require(tool: str) -> str:
    """Path of `tool`; skip the test without it, or fail in CI where it must be installed."""
    path = shutil.which(tool)
    if not path:
        missing(f"{tool} is not installed (see shared/specs/CLIENTS.md)")
    return path


def run_client(argv: list, *, env: dict | None = None,
               timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a client to completion; AssertionError with its stderr on failure or time-out."""
    argv = [str(a) for a in argv]
    require(argv[0])
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if exc.stderr else ""
        raise AssertionError(f"{shlex.join(argv)}: timed out after {timeout}s\n"
                             f"stderr:\n{stderr}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)}: exit status {proc.returncode}\n"
                             f"stderr:\n{proc.stderr}\nstdout:\n{proc.stdout[-2000:]}")
    return proc


# --- skopeo ---------------------------------------------------------------------------------

_DOCKER_ONLY = {"docker-archive", "docker-daemon"}  # transports that hold only Docker schema 2


def _tls_off(ref: str, flag: str) -> list[str]:
    # Test registries listen on plain-HTTP loopback; there is no internet to verify against.
    return [flag] if ref.startswith("docker://") else []


def skopeo_inspect(ref: str, *, raw: bool = True, config: bool = False) -> dict:
    """`skopeo inspect [--raw] [--config] REF` parsed; raw=False gives skopeo's summary."""
    argv = ["skopeo", "inspect", *(["--raw"] if raw else []), *(["--config"] if config else []),
            *_tls_off(ref, "--tls-verify=false"), ref]
    return json.loads(run_client(argv).stdout)


def skopeo_copy(src_ref: str, dest_ref: str, *, preserve_digests: bool | None = None) -> None:
    """`skopeo copy` without any policy file; keeps digests unless the copy must convert.

    skopeo's blob-info cache may otherwise substitute a differently compressed blob, so digests
    are preserved by default. That forbids manifest conversion, which skopeo 1.9 needs only when
    an OCI source goes to docker-archive:/docker-daemon: (it refuses: "need a Docker schema 2
    manifest"). skopeo also refuses to add to an existing docker-archive file.
    """
    src_t, dest_t = src_ref.split(":", 1)[0], dest_ref.split(":", 1)[0]
    if preserve_digests is None:
        preserve_digests = not (dest_t in _DOCKER_ONLY and src_t not in _DOCKER_ONLY)
    run_client(["skopeo", "--insecure-policy", "copy", "--quiet",
                *(["--preserve-digests"] if preserve_digests else []),
                *_tls_off(src_ref, "--src-tls-verify=false"),
                *_tls_off(dest_ref, "--dest-tls-verify=false"), src_ref, dest_ref])


# --- umoci / oci-image-tool -----------------------------------------------------------------

def umoci_unpack(oci_dir, tag: str, bundle_dir) -> Path:
    """Unpack DIR:TAG (umoci checks blob digests and diff_ids); returns the rootfs path."""
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    run_client(["umoci", "unpack", *rootless, "--image", f"{oci_dir}:{tag}", bundle_dir])
    return Path(bundle_dir) / "rootfs"


def oci_image_tool_validate(oci_dir, tag: str | None = None) -> str:
    """Validate a layout (schemas, digests; not diff_ids); tag None checks every ref."""
    refs = ["--ref", f"name={tag}"] if tag is not None else []
    return run_client(["oci-image-tool", "validate", "--type", "image", *refs, oci_dir]).stdout


# --- our own schema and digest check --------------------------------------------------------

def schema_dir() -> Path:
    """The OCI JSON schemas: <shared>/specs/oci-image-spec-schema, shared/ beside the repo."""
    shared = os.environ.get("LAYERPIPE_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[3] / "shared"
    return base / "specs" / "oci-image-spec-schema"


@functools.cache
def _validators() -> dict:
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    folder = schema_dir()
    if not folder.is_dir():
        missing(f"OCI schemas not found at {folder} (the shared/ folder beside the checkout; "
                "or set LAYERPIPE_SHARED)")

    def retrieve(uri: str) -> Resource:
        # The schemas $ref each other by file name, but nested draft-04 "id"s move the base
        # URI away from any real location, so resolve every reference by its last segment.
        text = (folder / uri.rsplit("/", 1)[-1]).read_text()
        return Resource.from_contents(json.loads(text), default_specification=DRAFT4)

    registry = Registry(retrieve=retrieve)
    files = {"layout": "image-layout-schema.json", "index": "image-index-schema.json",
             "manifest": "image-manifest-schema.json", "config": "config-schema.json"}
    return {kind: Draft4Validator(json.loads((folder / name).read_text()), registry=registry,
                                  format_checker=Draft4Validator.FORMAT_CHECKER)
            for kind, name in files.items()}


def _check_schema(kind: str, doc, where: str) -> None:
    errors = sorted(_validators()[kind].iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]
        raise AssertionError(f"{where} fails the OCI {kind} schema:\n" + "\n".join(lines))


def _hash_stream(stream) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def _check_blob(root: Path, desc: dict, where: str) -> Path:
    """The blob's path, once its sha256 and size match the descriptor."""
    alg, _, hexpart = str(desc.get("digest", "")).partition(":")
    path = root / "blobs" / "sha256" / hexpart
    if alg != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexpart) or not path.is_file():
        raise AssertionError(f"{where}: no blob for digest {desc.get('digest')!r} in {root}")
    with path.open("rb") as f:
        digest, size = _hash_stream(f)
    if (digest, size) != (desc["digest"], desc.get("size")):
        raise AssertionError(f"{where}: blob has {digest}, {size} bytes; descriptor says "
                             f"{desc['digest']}, {desc.get('size')} bytes")
    return path


def _open_zstd(path: Path):
    import zstandard  # a layerpipe dependency; imported here as only zstd layers need it
    return zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True)


def _diff_id(path: Path, media_type: str) -> str | None:
    """sha256 of the uncompressed tar, or None for media types that are not layer tars."""
    for suffixes, opener in ((("+gzip", ".tar.gzip"), gzip.open), (("+zstd",), _open_zstd),
                             (("tar",), lambda p: p.open("rb"))):
        if media_type.endswith(suffixes):
            with opener(path) as f:
                return _hash_stream(f)[0]
    return None


def _check_manifest(root: Path, desc: dict, where: str, seen: dict) -> None:
    manifest = json.loads(_check_blob(root, desc, where).read_bytes())
    _check_schema("manifest", manifest, where)
    if manifest.get("mediaType", desc["mediaType"]) != desc["mediaType"]:
        raise AssertionError(f"{where}: mediaType {manifest['mediaType']} differs from its "
                             f"descriptor's {desc['mediaType']}")
    cdesc = manifest["config"]
    config = json.loads(_check_blob(root, cdesc, f"{where} config").read_bytes())
    seen[cdesc["digest"]] = "config"
    if cdesc["mediaType"] not in CONFIG_TYPES:
        return  # an artifact: its layers need not be tars with diff_ids
    _check_schema("config", config, f"{where} config")
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest["layers"]):
        raise AssertionError(f"{where}: {len(manifest['layers'])} layers but "
                             f"{len(diff_ids)} diff_ids in the config")
    for i, (ldesc, want) in enumerate(zip(manifest["layers"], diff_ids)):
        got = _diff_id(_check_blob(root, ldesc, f"{where} layers[{i}]"), ldesc["mediaType"])
        if got is not None and got != want:
            raise AssertionError(f"{where} layers[{i}]: uncompressed tar is {got}, "
                                 f"config diff_ids[{i}] says {want}")
        seen[ldesc["digest"]] = "layer"


def _walk_index(root: Path, index: dict, where: str, seen: dict) -> None:
    for i, desc in enumerate(index.get("manifests", [])):
        here = f"{where} manifests[{i}] ({desc.get('digest')})"
        if desc.get("mediaType") in INDEX_TYPES:
            child = json.loads(_check_blob(root, desc, here).read_bytes())
            _check_schema("index", child, here)
            seen[desc["digest"]] = "index"
            _walk_index(root, child, here, seen)
        elif desc.get("mediaType") in MANIFEST_TYPES:
            _check_manifest(root, desc, here, seen)
            seen[desc["digest"]] = "manifest"
        else:
            _check_blob(root, desc, here)
            seen[desc["digest"]] = "other"


def validate_oci_schemas(oci_dir) -> dict[str, str]:
    """Check a layout against the OCI schemas, plus every blob's sha256, size and diff_id.

    Returns {digest: kind} for every blob reached (kind: index, manifest, config, layer, other).
    """
    root = Path(oci_dir)
    if not (root / "oci-layout").is_file() or not (root / "index.json").is_file():
        raise AssertionError(f"{root}: not an OCI layout (oci-layout or index.json missing)")
    _check_schema("layout", json.loads((root / "oci-layout").read_bytes()), "oci-layout")
    index = json.loads((root / "index.json").read_bytes())
    _check_schema("index", index, "index.json")
    seen: dict[str, str] = {}
    _walk_index(root, index, "index.json", seen)
    return seen


# --- comparing unpacked trees ---------------------------------------------------------------

def _describe(path: Path) -> tuple:
    """What a client must preserve: type, exec bit, content or link target (never followed)."""
    if not os.path.lexists(path):
        return ("missing",)
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return ("symlink", os.readlink(path))
    if stat.S_ISREG(mode):
        return ("file", bool(mode & 0o111), hashlib.sha256(path.read_bytes()).hexdigest())
    return ("dir",) if stat.S_ISDIR(mode) else ("other", stat.S_IFMT(mode))


def compare_trees(expected_root, actual_root, relpaths) -> int:
    """Compare each relpath (recursively) under both roots; returns the entries compared."""
    expected_root, actual_root = Path(expected_root), Path(actual_root)
    todo = [str(p).lstrip("/") for p in relpaths]
    problems, count = [], 0
    while todo:
        rel = todo.pop()
        count += 1
        want, got = _describe(expected_root / rel), _describe(actual_root / rel)
        if want != got:
            same_kind = want[:2] == got[:2]  # then only the file content differs
            problems.append(f"  {rel}: " + ("content differs" if same_kind else
                                            f"expected {want[:2]}, got {got[:2]}"))
        elif want[0] == "dir":  # walk both listings, so extra entries are reported too
            names = set(os.listdir(expected_root / rel)) | set(os.listdir(actual_root / rel))
            todo.extend(f"{rel}/{name}" for name in sorted(names))
    if problems:
        raise AssertionError(f"{actual_root} differs from {expected_root}:\n"
                             + "\n".join(sorted(problems)[:50]))
    return count


# --- daemons and container engines ----------------------------------------------------------

def client_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")}
    return {**env, **extra}


@pytest.fixture(scope="session")
def dockerd():
    """A private dockerd (vfs, no networking setup); yields the env dict with DOCKER_HOST."""
    require("dockerd")
    docker = require("docker")
    # A short folder in /tmp: unix socket paths (containerd's among them) must stay < 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="lp-dockerd."))
    env = client_env(DOCKER_HOST=f"unix://{d}/docker.sock", DOCKER_CONFIG=str(d / "client"))
    argv = ["dockerd", "--data-root", d / "data", "--exec-root", d / "exec",
            "--pidfile", d / "pid", "-H", env["DOCKER_HOST"], "--storage-driver=vfs",
            "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false"]
    try:
        # A clean stop also stops its containerd and unmounts the data root.
        with daemons.running("dockerd", argv, d / "dockerd.log",
                             lambda: daemons.succeeds([docker, "info"], env)):
            yield env
    finally:
        _stop_containerd(d)
        daemons.unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def registry():
    """A docker-registry on a free 127.0.0.1 port (plain HTTP), data and logs in a temp dir."""
    require("docker-registry")
    with Registry.start() as reg:
        yield reg


def _stop_containerd(d: Path) -> None:
    # containerd runs in a session of its own: stop it should dockerd have died first, but only
    # if the pid still belongs to our containerd (a stale pid file may name another process).
    try:
        pid = int((d / "exec" / "containerd" / "containerd.pid").read_text())
        if str(d) in Path(f"/proc/{pid}/cmdline").read_text():
            daemons.stop(pid)
    except (OSError, ValueError):
        pass  # no pid file, or that process is gone


def _loaded(output: str, pattern: str) -> str:
    found = re.findall(pattern, output, flags=re.M)
    if not found:
        raise AssertionError(f"no loaded image named in output:\n{output}")
    return found[0].split(",")[0].strip()


def docker_load(env: dict, tar_path) -> str:
    """`docker load`; returns the first image named ("name:tag", else "sha256:<id>")."""
    out = run_client(["docker", "load", "-i", tar_path], env=env).stdout
    return _loaded(out, r"^Loaded image(?: ID)?: (\S+)")


def docker_run(env: dict, image: str, *args: str) -> str:
    """`docker run --rm --network none IMAGE ARGS...` (never pulls); returns stdout."""
    return run_client(["docker", "run", "--rm", "--network", "none", "--pull", "never",
                       image, *args], env=env).stdout


_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{d}/libpod"
"""
_STORAGE_CONF = '[storage]\ndriver = "vfs"\nrunroot = "{d}/run"\ngraphroot = "{d}/storage"\n'
_POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'


@pytest.fixture(scope="session")
def podman():
    """Private podman storage and config (vfs, runc, no network); yields the env dict."""
    require("podman")
    d = Path(tempfile.mkdtemp(prefix="lp-podman."))
    (d / "tmp").mkdir()
    (d / "containers.conf").write_text(_CONTAINERS_CONF.format(d=d))
    (d / "storage.conf").write_text(_STORAGE_CONF.format(d=d))
    (d / "policy.json").write_text(_POLICY)
    # TMPDIR: podman stages image copies there (default /var/tmp, which we would litter).
    env = client_env(CONTAINERS_CONF=str(d / "containers.conf"), TMPDIR=str(d / "tmp"),
                      CONTAINERS_STORAGE_CONF=str(d / "storage.conf"))
    try:
        yield env
    finally:
        # Containers of runs that timed out would keep conmon processes alive.
        subprocess.run(["podman", "rm", "--all", "--force", "--time", "0"], env=env,
                       capture_output=True, timeout=TIMEOUT)
        daemons.unmount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def _policy(env: dict) -> list[str]:
    # Do not depend on /etc/containers/policy.json; podman hides this flag but honours it.
    return ["--signature-policy", str(Path(env["CONTAINERS_CONF"]).with_name("policy.json"))]


def podman_load(env: dict, archive) -> str:
    """`podman load` (tries oci-archive, then docker-archive); returns the first name loaded."""
    out = run_client(["podman", "load", *_policy(env), "-i", archive], env=env).stdout
    return _loaded(out, r"^Loaded image\(?s?\)?: (\S+)")


def podman_pull(env: dict, ref: str) -> str:
    """`podman pull` e.g. oci:DIR:TAG or docker-archive:F; returns the image ID."""
    out = run_client(["podman", "pull", "--quiet", *_policy(env),
                      *_tls_off(ref, "--tls-verify=false"), ref], env=env).stdout
    return out.split()[-1]


def podman_run(env: dict, image: str, *args: str) -> str:
    """`podman run --rm --network none IMAGE ARGS...` (never pulls); returns stdout."""
    return run_client(["podman", "run", "--rm", "--network", "none", "--pull", "never",
                       image, *args], env=env).stdout


def buildah_scratch(env: dict, rootfs, dests: list[str], *config: str) -> None:
    """An image made by buildah from scratch (no network, no run): ROOTFS's contents,
    `buildah config CONFIG...`, committed to each of DESTS (e.g. oci-archive:F)."""
    ctr = run_client(["buildah", "from", "scratch"], env=env).stdout.strip()
    try:
        run_client(["buildah", "copy", ctr, rootfs, "/"], env=env)
        if config:
            run_client(["buildah", "config", *config, ctr], env=env)
        for dest in dests:
            run_client(["buildah", "commit", "--quiet", *_policy(env), ctr, dest], env=env)
    finally:
        subprocess.run(["buildah", "rm", ctr], env=env, capture_output=True, timeout=TIMEOUT)
