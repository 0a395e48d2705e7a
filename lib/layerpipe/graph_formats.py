"""Parsers for the closure descriptions Guix and Nix write.

- text: Guix `#:references-graphs` / Nix `exportReferencesGraph`: per item the
  lines PATH, DERIVER (may be empty), N, then N references.
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
from typing import IO, Iterator

import orjson

from .errors import LayerpipeError
from .storepath import nix32_decode

FORMATS = ("auto", "text", "json-list", "json-object", "structured-attrs")


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
    return "sha256:" + nix32_decode(digest, 32).hex()


def _b64(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("invalid base64 in SRI hash") from None
    if len(raw) != 32:
        raise ValueError("SRI sha256 hash must be 32 bytes")
    return raw


def detect(head: bytes) -> str:
    """Which format a stream starting with HEAD is in (JSON kinds are refined later)."""
    text = head.lstrip()
    if text.startswith(b"["):
        return "json-list"
    if text.startswith(b"{"):
        return "json-object"
    if text.startswith(b"/"):
        return "text"
    if not text:
        raise LayerpipeError("empty input: no store paths")
    raise LayerpipeError("unrecognised input: expected a reference graph (text) or Nix JSON")


def read_text(stream: IO[bytes], name: str) -> Iterator[PathInfo]:
    """The references-graph text format, streamed line by line."""
    lines = _numbered_lines(stream, name)
    for lineno, path in lines:
        if not path:
            continue
        where = f"{name}:{lineno}"
        deriver = _next(lines, name, "deriver line")[1]
        count_no, count = _next(lines, name, "reference count")
        if not (count.isascii() and count.isdigit()):
            raise LayerpipeError(f"expected a reference count, got {count!r}", f"{name}:{count_no}")
        refs = []
        for _ in range(int(count)):
            ref_no, ref = _next(lines, name, "reference")
            refs.append((ref, f"{name}:{ref_no}"))
        yield PathInfo(path, refs, where, deriver=deriver or None)


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
        return [(k, v, f"{name}: {k}") for k, v in doc.items()]
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


def _entry(path, entry, where) -> PathInfo:
    if not isinstance(entry, dict):
        raise LayerpipeError("not a valid store path (Nix printed no information for it)", where)
    if entry.get("valid") is False:
        raise LayerpipeError(f"{path}: not a valid store path in the store that printed it", where)
    refs = entry.get("references", [])
    if not isinstance(path, str) or not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
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
    return PathInfo(path, [(r, where) for r in refs], where, size, nar_hash, deriver)
