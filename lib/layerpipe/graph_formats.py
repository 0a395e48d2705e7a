"""Parsers for the closure descriptions Guix and Nix write.

- text: Guix `#:references-graphs` / Nix `exportReferencesGraph`: per item the
  lines PATH, DERIVER (may be empty), N, then N references.
- registration: `nix-store --dump-db` and the `registration` file of nixpkgs'
  closureInfo (what `nix-store --load-db` reads): per item PATH, NARHASH,
  NARSIZE, DERIVER (may be empty), N, then N references.
- paths: one store path a line (`guix gc -R`, `nix-store -qR`, closureInfo's
  `store-paths`): no references, so closure_read scans for them.
- json-list: `nix path-info --json -r` up to Nix 2.18: a list of objects.
- json-object: `nix path-info --json -r` from Nix 2.19: an object keyed by path.
- structured-attrs: `.attrs.json` of a derivation with `__structuredAttrs` and
  `exportReferencesGraph`: an object whose graph attribute is a list of objects.

Each yields PathInfo entries; closure_read checks them as a whole.
"""
import base64
import binascii
import re
from dataclasses import dataclass
from itertools import repeat
from typing import IO, Iterable, Iterator

import orjson

from .errors import LayerpipeError
from .storepath import nix32_decode

FORMATS = ("auto", "text", "registration", "paths", "json-list", "json-object", "structured-attrs")
LINE_FORMATS = ("text", "registration", "paths")


@dataclass
class PathInfo:
    path: str
    references: list
    where: str
    narSize: int | None = None
    narHash: str | None = None
    deriver: str | None = None


_HEX64 = re.compile(r"[0-9a-f]{64}")


def normalise_nar_hash(value: str) -> str:
    """Any spelling Nix or Guix use for a sha256 NAR hash -> `sha256:<hex>`.

    Accepted: `sha256:<hex>`, `sha256:<nix-base32>`, SRI `sha256-<base64>`,
    and the bare hex or nix-base32 digest.
    """
    if not isinstance(value, str):
        raise ValueError("narHash must be a string")
    algo, sep, digest = value.partition(":")
    if not sep:
        algo, sep, digest = value.partition("-")
        if sep and algo in ("sha1", "sha256", "sha512", "md5"):
            if algo != "sha256":
                raise ValueError(f"unsupported hash algorithm {algo!r} (only sha256)")
            return "sha256:" + _b64(digest).hex()
        algo, digest = "sha256", value
    if algo != "sha256":
        raise ValueError(f"unsupported hash algorithm {algo!r} (only sha256)")
    if _HEX64.fullmatch(digest.lower()):
        return "sha256:" + digest.lower()
    if len(digest) == 44:  # base64, which Nix's Hash::parseAny also reads
        return "sha256:" + _b64(digest).hex()
    return "sha256:" + nix32_decode(digest, 32).hex()


def _b64(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("invalid base64 in SRI hash") from None
    if len(raw) != 32:
        raise ValueError("SRI sha256 hash must be 32 bytes")
    return raw


def sniff(stream: IO[bytes]) -> tuple[list[bytes], str]:
    """Read the first lines of STREAM, enough to tell its format: (lines, format)."""
    head: list[bytes] = []
    seen = 0
    while seen < 3:
        line = stream.readline()
        if not line:
            break
        head.append(line)
        if line.strip():
            seen += 1
        if seen and line.lstrip()[:1] in (b"[", b"{"):
            break
    return head, detect(b"".join(head))


def detect(head: bytes) -> str:
    """Which format a stream starting with HEAD (whole lines) is in.

    JSON kinds are refined later.  Of the line formats, the second line tells:
    empty or a path followed by a line that is no path is a deriver (text),
    another path is a list of paths, anything else is a NAR hash
    (registration).
    """
    text = head.lstrip()
    if text.startswith(b"["):
        return "json-list"
    if text.startswith(b"{"):
        return "json-object"
    if not text:
        raise LayerpipeError("empty input: no store paths")
    if not text.startswith(b"/"):
        raise LayerpipeError("unrecognised input: expected a reference graph, a registration, "
                             "a list of store paths or Nix JSON")
    lines = text.split(b"\n")
    second, third = (lines[1:3] + [None, None])[:2]
    # After a path, a third line that is no path can only be a text graph's
    # reference count (read as one, so a bad count is reported as such).
    counted = bool(third and third.strip()) and not third.lstrip().startswith(b"/")
    if not second:  # empty: no deriver; None: a single path
        return "text" if second == b"" and counted else "paths"
    if second.startswith(b"/"):
        return "text" if counted else "paths"
    return "registration"


def read_text(lines: Iterable[bytes], name: str, registration: bool = False) -> Iterator[PathInfo]:
    """The references-graph text format, or with REGISTRATION the
    `nix-store --load-db` one (NAR hash and size after the path), line by line."""
    lines = _numbered_lines(lines, name)
    for lineno, path in lines:
        if not path:
            continue
        where = f"{name}:{lineno}"
        nar_hash = nar_size = None
        if registration:
            hash_no, text = _next(lines, name, "NAR hash")
            try:
                nar_hash = normalise_nar_hash(text)
            except ValueError as exc:
                raise LayerpipeError(f"NAR hash: {exc}", f"{name}:{hash_no}") from None
            nar_size = _number(*_next(lines, name, "NAR size"), name, "NAR size")
        deriver = _next(lines, name, "deriver line")[1]
        count = _number(*_next(lines, name, "reference count"), name, "reference count")
        refs = []
        for _ in range(count):
            ref_no, ref = _next(lines, name, "reference")
            refs.append((ref, f"{name}:{ref_no}"))
        yield PathInfo(path, refs, where, nar_size, nar_hash, deriver or None)


def read_paths(lines: Iterable[bytes], name: str) -> Iterator[PathInfo]:
    """One store path a line; blank lines are skipped.  References: none known."""
    for lineno, path in _numbered_lines(lines, name):
        if path.strip():
            yield PathInfo(path.strip(), [], f"{name}:{lineno}")


def _number(lineno: int, text: str, name: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise LayerpipeError(f"expected a {what}, got {text!r}", f"{name}:{lineno}")
    if len(text) > 18 and int(text) >= 1 << 63:  # no store holds that much; records could not carry it
        raise LayerpipeError(f"{what} {text[:30]} is too large", f"{name}:{lineno}")
    return int(text)


def _numbered_lines(stream, name):
    for lineno, raw in enumerate(stream, 1):
        try:
            yield lineno, raw.decode("utf-8").rstrip("\n")
        except UnicodeDecodeError:
            raise LayerpipeError("not valid UTF-8", f"{name}:{lineno}") from None


def _next(lines, name, what):
    try:
        return next(lines)
    except StopIteration:
        raise LayerpipeError(f"input ends where a {what} was expected", f"{name}:end") from None


def read_json(data: bytes, name: str, fmt: str, attr: str | None) -> Iterator[PathInfo]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise LayerpipeError(f"invalid JSON: {exc}", name) from None
    if isinstance(doc, list):
        if fmt not in ("auto", "json-list"):
            raise LayerpipeError(f"expected {fmt}, found a JSON list", name)
        items = [(e.get("path") if isinstance(e, dict) else None, e, f"{name}: entry {i}")
                 for i, e in enumerate(doc)]
    elif isinstance(doc, dict):
        if fmt == "json-list":
            raise LayerpipeError("expected json-list, found a JSON object", name)
        items = _object_items(doc, name, fmt, attr)
    else:
        raise LayerpipeError("expected a JSON list or object", name)
    for path, entry, where in items:
        yield _entry(path, entry, where)


def _object_items(doc: dict, name: str, fmt: str, attr: str | None):
    keyed = doc and all(k.startswith("/") for k in doc)
    if fmt == "json-object" or (fmt == "auto" and keyed and attr is None):
        return [(k, v, f"{name}: {_shown(k)}") for k, v in doc.items()]
    graphs = [k for k, v in doc.items()
              if isinstance(v, list) and v and all(isinstance(e, dict) and "path" in e for e in v)]
    if attr is not None:
        if attr not in graphs:
            raise LayerpipeError(f"no reference graph under attribute {attr!r}", name)
        graphs = [attr]
    if len(graphs) != 1:
        which = ", ".join(graphs) if graphs else "none found"
        raise LayerpipeError(f"cannot tell which attribute holds the graph ({which}); use --attr", name)
    return [(e.get("path"), e, f"{name}: {graphs[0]}[{i}]") for i, e in enumerate(doc[graphs[0]])]


def _shown(text) -> str:
    """TEXT for an error message: as it is, or quoted when it would break the line."""
    return text if isinstance(text, str) and text.isprintable() else repr(text)


def _entry(path, entry, where) -> PathInfo:
    if not isinstance(entry, dict):
        raise LayerpipeError("not a valid store path (Nix printed no information for it)", where)
    if entry.get("valid") is False:
        raise LayerpipeError(f"{_shown(path)}: not a valid store path in the store that printed it", where)
    refs = entry.get("references", [])
    if not isinstance(path, str) or not isinstance(refs, list) or not all(map(isinstance, refs, repeat(str))):
        raise LayerpipeError("needs 'path' (string) and 'references' (list of strings)", where)
    size = entry.get("narSize")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise LayerpipeError("'narSize' must be a non-negative integer", where)
    nar_hash = entry.get("narHash")
    if nar_hash is not None:
        try:
            nar_hash = normalise_nar_hash(nar_hash)
        except ValueError as exc:
            raise LayerpipeError(f"narHash: {exc}", where) from None
    deriver = entry.get("deriver") if isinstance(entry.get("deriver"), str) else None
    return PathInfo(path, list(zip(refs, repeat(where))), where, size, nar_hash, deriver)
