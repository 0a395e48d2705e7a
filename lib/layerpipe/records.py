"""The NDJSON record stream that the stages exchange (man/layerpipe-records.7).

One JSON object per line, `type` first.  The first line should be a header
(`{"type":"header","schema_version":1,"stages":[...]}`); a stream without one,
as a user's script may write, is read as schema version 1.  Records of types a
stage does not know, and keys it does not know, pass through untouched.
"""
import gc
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Iterator

import orjson

from .errors import LayerpipeError
from .storepath import split_store_path

SCHEMA_VERSION = 1
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# orjson reads any depth but writes at most 255 levels: a deeper record could
# not be passed on, so it is refused when read, before anything is written.
MAX_DEPTH = 254


@dataclass(slots=True)
class Record:
    """A parsed record and where it came from, for error messages."""
    data: dict
    where: str

    @property
    def type(self) -> str:
        return self.data["type"]


@dataclass
class Header:
    schema_version: int = SCHEMA_VERSION
    stages: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def with_stage(self, stage: str) -> dict:
        """The header a stage writes: what it read, with its own name appended."""
        return {"type": "header", "schema_version": SCHEMA_VERSION,
                "stages": [*self.stages, stage], **self.extra}


def _parse_line(line: bytes, where: str) -> dict:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise LayerpipeError(f"not a JSON record ({exc.args[0].split(':')[0]})", where) from None
    if not isinstance(data, dict):
        raise LayerpipeError("a record must be a JSON object", where)
    if not isinstance(data.get("type"), str):
        raise LayerpipeError("a record needs a string field 'type'", where)
    if line.count(b"[") + line.count(b"{") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise LayerpipeError(f"a record nested deeper than {MAX_DEPTH} levels", where)
    return data


def _depth(value) -> int:
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        level.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _header_from(data: dict, where: str) -> Header:
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LayerpipeError("header needs an integer 'schema_version' >= 1", where)
    if version > SCHEMA_VERSION:
        raise LayerpipeError(
            f"schema version {version} is newer than this layerpipe reads ({SCHEMA_VERSION}); "
            "upgrade layerpipe", where)
    stages = data.get("stages", [])
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        raise LayerpipeError("header 'stages' must be a list of strings", where)
    extra = {k: v for k, v in data.items() if k not in ("type", "schema_version", "stages")}
    return Header(version, stages, extra)


class RecordReader:
    """Reads records from a binary stream; `header` is known after the first record."""

    def __init__(self, stream: IO[bytes], name: str):
        self.stream = stream
        self.name = name
        self.header = Header()
        self._lineno = 0

    def __iter__(self) -> Iterator[Record]:
        first, name, loads = True, self.name, orjson.loads
        for line in self.stream:
            self._lineno += 1
            try:  # the common case in one C call; anything odd takes the checked way
                data = loads(line)
                ok = (type(data) is dict and type(data.get("type")) is str and line.endswith(b"\n")
                      and line.count(b"[") + line.count(b"{") <= MAX_DEPTH)
            except orjson.JSONDecodeError:
                ok = False
            where = f"{name}:{self._lineno}"
            if not ok:
                if not line.endswith(b"\n"):
                    raise LayerpipeError("truncated record (no newline at end of input)", where)
                if not line.strip():
                    continue
                data = _parse_line(line, where)
            if data["type"] == "header":
                if not first:
                    raise LayerpipeError("a header is only allowed as the first record", where)
                self.header = _header_from(data, where)
            else:
                yield Record(data, where)
            first = False


class RecordWriter:
    """Writes records as NDJSON lines to a binary stream."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream

    def write(self, data: dict) -> None:
        self.stream.write(orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        self.stream.flush()


@contextmanager
def paused_gc() -> Iterator[None]:
    """Run the body without the cyclic garbage collector.

    A stage holding a 100,000-path graph has millions of lists, dicts and
    strings alive; each full collection walks them all, and they come often
    while the graph is built: a third of the run.  The records and graphs
    hold no reference cycles, so there is nothing for it to find."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# -- field checks shared by the stages ------------------------------------

def need(rec: Record, key: str, kind, *, optional: bool = False, default=None):
    """rec.data[key] checked against KIND (a type or tuple); bools are not ints."""
    if key not in rec.data or (optional and rec.data[key] is None):
        if optional:
            return default
        raise LayerpipeError(f"{rec.type} record needs field '{key}'", rec.where)
    value = rec.data[key]
    if isinstance(value, bool) and kind in (int, (int,)):
        ok = False
    else:
        ok = isinstance(value, kind)
    if not ok:
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise LayerpipeError(f"{rec.type} record field '{key}' must be {name}", rec.where)
    return value


def need_store_path(rec: Record, value, what: str) -> str:
    try:
        split_store_path(value)
    except LayerpipeError as exc:
        raise LayerpipeError(f"{what}: {exc.message}", rec.where) from None
    return value


def need_digest(rec: Record, key: str) -> str:
    value = need(rec, key, str)
    if not DIGEST_RE.fullmatch(value):
        raise LayerpipeError(f"{rec.type} record field '{key}' must be sha256:<64 hex digits>", rec.where)
    return value


def need_size(rec: Record, key: str, *, optional: bool = False):
    value = need(rec, key, int, optional=optional)
    if value is not None and value < 0:
        raise LayerpipeError(f"{rec.type} record field '{key}' must not be negative", rec.where)
    return value


def need_path_list(rec: Record, key: str, *, optional: bool = False) -> list:
    values = need(rec, key, list, optional=optional, default=[])
    for value in values:
        need_store_path(rec, value, f"'{key}' entry")
    return values
