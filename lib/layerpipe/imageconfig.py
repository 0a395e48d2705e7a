"""Image config and manifest documents, tags and architectures.

Everything here is hashed, so it is serialised canonically: keys sorted, no
spaces (orjson with OPT_SORT_KEYS), and built only from the options and the
layer records, never from the clock or the host (except the default --arch).
"""
import datetime
import re

import orjson

from .errors import UsageError

CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"

# GNU system / Nix system prefixes, mapped as Guix maps them (with the
# architectures Guix added later); Docker/OCI names are taken as they are.
_ARCH_PREFIXES = [("x86_64", "amd64"), ("i686", "386"), ("i586", "386"), ("aarch64", "arm64"),
                  ("armhf", "arm"), ("arm", "arm"), ("mips64el", "mips64le"), ("mips64", "mips64le"), ("i386", "386"),
                  ("powerpc64le", "ppc64le"), ("riscv64", "riscv64"), ("s390x", "s390x")]
OCI_ARCHES = {"amd64", "386", "arm64", "arm", "mips64le", "ppc64le", "riscv64", "s390x",
              "mips", "mipsle", "mips64", "ppc64", "loong64", "wasm"}

_REPO_CHARS = re.compile(r"[^a-z0-9._-]")
_SEPARATOR_RUNS = re.compile(r"[._-]*[._][._-]*")
_HOST_RE = re.compile(r"(localhost|[a-z0-9-]+(\.[a-z0-9-]+)+|[a-z0-9.-]+:[0-9]+)", re.IGNORECASE)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def canonical_json(doc) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def architecture(value: str | None) -> str:
    """An OCI architecture from an OCI name, a GNU triplet or a Nix system."""
    if value is None:
        import platform

        value = platform.machine()
    if value in OCI_ARCHES:
        return value
    cpu = value.split("-", 1)[0]
    for prefix, arch in _ARCH_PREFIXES:
        if cpu == prefix or (prefix == "arm" and re.fullmatch(r"armv?[5-7][a-z]*", cpu)):
            return arch
    raise UsageError(f"unknown architecture {value!r} (e.g. amd64, arm64, x86_64-linux, aarch64-linux)")


def rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_repository_component(name: str) -> str:
    """Guix's rule: lower case, `[a-z0-9._-]` (others become '.'), no leading or
    trailing separators, at most 255 characters.  Unlike Guix,
    separators are trimmed after the replacement and a run of them that holds
    '.' or '_' becomes one '.', so the result is always a name Docker takes
    (`App!` -> `app`, not `app.`)."""
    name = _REPO_CHARS.sub(".", name.lower())
    name = _SEPARATOR_RUNS.sub(lambda m: "." if len(m.group()) > 1 else m.group(), name).strip("_-.")
    return name[:255].strip("_-.")


def canonical_tag(value: str) -> str:
    """`name[:tag]` -> `canonical-name:tag` (tag `latest` when none is given).

    A first component with a '.' or ':' or named localhost is a registry host
    and kept as it is.
    """
    name, tag = value, "latest"
    head, _, last = value.rpartition("/")
    if ":" in last:
        last, tag = last.rsplit(":", 1)
        name = f"{head}/{last}" if head else last
    if not _TAG_RE.fullmatch(tag):
        raise UsageError(f"--tag {value!r}: invalid tag {tag!r} (letters, digits, '_', '.', '-'; at most 128)")
    parts = name.split("/")
    host = [parts.pop(0)] if len(parts) > 1 and (parts[0] == "localhost" or any(c in parts[0] for c in ".:")) else []
    if host and not _HOST_RE.fullmatch(host[0]):
        raise UsageError(f"--tag {value!r}: invalid registry host {host[0]!r}")
    if not parts or not all(parts):
        raise UsageError(f"--tag {value!r}: empty repository name")
    parts = [canonical_repository_component(p) for p in parts]
    if not host and len(parts) == 1:
        parts[0] = parts[0].ljust(2, "a")  # Guix: at least two characters
    if not all(parts):
        raise UsageError(f"--tag {value!r}: a path component has no usable characters")
    return "/".join(host + parts) + ":" + tag


def qualified_name(tag: str) -> str:
    """`name:tag` as Docker spells it in full: `docker.io/library/name:tag`.

    containerd and podman name an image loaded from an OCI layout after this
    (the `io.containerd.image.name` annotation), as they do for `docker save`.
    """
    first, sep, _ = tag.partition("/")
    if sep and (first == "localhost" or any(c in first for c in ".:")):
        return tag
    return f"docker.io/{tag}" if sep else f"docker.io/library/{tag}"


def split_pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {value!r}: expected KEY=VALUE")
        pairs.append((key, val))
    return pairs


# What an image built on a base takes from the base's config.config (its OCI
# fields); options given on the command line override them.
INHERITED = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal")


def merge_env(base: list[str], ours: list[str]) -> list[str]:
    """BASE's variables in their order, each replaced by a later one of the same
    name; new names appended in the order they come."""
    result: list[str] = []
    place: dict[str, int] = {}
    for entry in base + ours:
        name = entry.partition("=")[0]
        if name in place:
            result[place[name]] = entry
        else:
            place[name] = len(result)
            result.append(entry)
    return result


def inherit(base: dict, ours: dict) -> dict:
    """BASE's runtime config overridden by OURS: Env by variable name and Labels
    by key, the rest whole.  As in a Dockerfile, a new Entrypoint drops the
    base's Cmd unless a Cmd is given too."""
    merged = dict(base)
    if "Entrypoint" in ours and "Cmd" not in ours:
        merged.pop("Cmd", None)
    for key, value in ours.items():
        if key == "Env":
            value = merge_env(base.get("Env", []), value)
        elif key == "Labels":
            value = {**base.get("Labels", {}), **value}
        merged[key] = value
    return merged


def image_config(*, arch: str, created: str, diff_ids: list[str], history: list[dict],
                 env: list[str], entrypoint: list[str] | None, cmd: list[str] | None,
                 workdir: str | None, labels: dict[str, str], base: dict | None = None,
                 variant: str | None = None) -> dict:
    """The image config; with BASE (a base image's runtime config), inherited from it."""
    runtime: dict = {}
    if env:
        runtime["Env"] = env
    if entrypoint:
        runtime["Entrypoint"] = entrypoint
    if cmd:
        runtime["Cmd"] = cmd
    if workdir:
        runtime["WorkingDir"] = workdir
    if labels:
        runtime["Labels"] = labels
    if base is not None:
        runtime = inherit(base, runtime)
    return {"architecture": arch, **({"variant": variant} if variant else {}), "os": "linux",
            "created": created, "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}


def descriptor(media_type: str, digest: str, size: int, **extra) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def manifest(config_desc: dict, layer_descs: list[dict], annotations: dict | None = None) -> dict:
    return {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config_desc, "layers": layer_descs, **({"annotations": annotations} if annotations else {})}
