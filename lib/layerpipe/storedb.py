"""The store database in the image: Guix's or Nix's SQLite file and its links.

`guix`: /var/guix/db/db.sqlite in the schema of Nix 1.3 (version 7), which
the Guix daemon keeps (ValidPaths with path, hash, registrationTime,
deriver, narSize; Refs with referrer, reference), filled as Guix's
guix/store/database.scm does, with the GC roots and the profile link `guix
pack --localstatedir` makes (gnu/build/install.scm,
install-database-and-gc-roots).
`nix`: /nix/var/nix/db/db.sqlite in the schema of Nix 2.4 and later (schema
version 10, also in /nix/var/nix/db/schema, which Nix checks), and a link per
root under /nix/var/nix/gcroots/docker as nixpkgs' dockerTools makes.

Rows go in a fixed order (items leaves first, as Guix registers them, ties by
path; references sorted), every registrationTime is SOURCE_DATE_EPOCH, and
the file is written without a journal left behind, then VACUUMed: the same
items give the same bytes with the same SQLite library.
"""
import heapq
import os
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from .errors import LayerpipeError
from .nar import nar_hash, nar_size
from .records import Record, need, need_digest, need_path_list, need_size, need_store_path

_REFS = """
create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);

create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);

create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;

create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null, -- symbolic output id, usually "out"
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);

create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
"""

_VALID_PATHS = """
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer%s
);
"""
_NIX_COLUMNS = """,
    ultimate         integer, -- null implies "false"
    sigs             text, -- space-separated
    ca               text -- if not null, an assertion that the path is content-addressed; see ValidPathInfo"""

# The Guix daemon's schema, and Nix's since 2.4 (schema version 10): Nix added three columns.
SCHEMAS = {
    "guix": _VALID_PATHS % "" + _REFS + """
create table if not exists FailedPaths (
    path text primary key not null,
    time integer not null
);
""",
    "nix": _VALID_PATHS % _NIX_COLUMNS + _REFS,
}
NIX_SCHEMA_VERSION = b"10"
DB_FILES = {"guix": "var/guix/db/db.sqlite", "nix": "nix/var/nix/db/db.sqlite"}


@dataclass(frozen=True)
class Item:
    path: str
    nar_hash: str  # sha256:<hex>, as both databases hold it
    nar_size: int
    references: tuple[str, ...]
    deriver: str | None = None


def items_from(records: list[Record], layer_paths: set[str], root: str) -> list[Item]:
    """One Item per path record, each checked.  narHash (with narSize) is
    computed from the item under ROOT when its record has none, items hashed
    in parallel; every layer member and every reference needs a record."""
    items, seen, to_hash = [], set(), []
    for rec in records:
        path = need_store_path(rec, need(rec, "path", str), "'path'")
        if path in seen:
            raise LayerpipeError(f"two path records for {path}", rec.where)
        seen.add(path)
        digest = need_digest(rec, "narHash") if "narHash" in rec.data else ""
        size = need_size(rec, "narSize", optional=True)
        fs_path = os.path.join(root, path.lstrip("/"))
        if not digest:
            if not os.path.lexists(fs_path):
                raise LayerpipeError(f"{path} has no narHash and is not under {root} to compute it "
                                     "(see --root)", rec.where)
            to_hash.append((len(items), fs_path))
        elif size is None and os.path.lexists(fs_path):
            size = nar_size(fs_path)  # from names and sizes alone: no file is read
        items.append(Item(path, digest, size or 0,
                          tuple(need_path_list(rec, "references", optional=True)),
                          need(rec, "deriver", str, optional=True)))
    for item in items:
        missing = sorted(set(item.references) - seen)
        if missing:
            raise LayerpipeError(f"--store-db: {item.path} refers to {missing[0]}, which has no path record")
    missing = sorted(layer_paths - seen)
    if missing:
        raise LayerpipeError(f"--store-db needs a path record for every store item; {missing[0]} has none")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # hashlib works without the GIL
        for (i, _), (digest, size) in zip(to_hash, pool.map(lambda job: nar_hash(job[1]), to_hash)):
            items[i] = replace(items[i], nar_hash=digest, nar_size=size)
    return items


def leaves_first(items: list[Item]) -> list[Item]:
    """ITEMS with every item after those it refers to, ties by path."""
    by_path = {i.path: i for i in items}
    waiting = {i.path: {r for r in i.references if r != i.path and r in by_path} for i in items}
    users: dict[str, list[str]] = {}
    for path, refs in waiting.items():
        for ref in refs:
            users.setdefault(ref, []).append(path)
    ready = [p for p, refs in waiting.items() if not refs]
    heapq.heapify(ready)
    order = []
    while ready:
        path = heapq.heappop(ready)
        order.append(path)
        for user in users.get(path, ()):
            waiting[user].discard(path)
            if not waiting[user]:
                heapq.heappush(ready, user)
    placed = set(order)
    order += sorted(p for p in by_path if p not in placed)  # a cycle: not a real store
    return [by_path[p] for p in order]


def database(kind: str, items: list[Item], epoch: int) -> bytes:
    """The bytes of the SQLite database of KIND registering ITEMS."""
    ordered = leaves_first(items)
    ids = {item.path: n for n, item in enumerate(ordered, 1)}
    with tempfile.TemporaryDirectory(prefix="layerpipe-db-") as tmp:
        name = os.path.join(tmp, "db.sqlite")
        db = sqlite3.connect(name, isolation_level=None)
        try:
            db.execute("pragma page_size = 4096")
            db.execute("pragma journal_mode = delete")
            db.executescript(SCHEMAS[kind])
            db.execute("begin")
            db.executemany("insert into ValidPaths (id, path, hash, registrationTime, deriver, narSize) "
                           "values (?, ?, ?, ?, ?, ?)",
                           [(ids[i.path], i.path, i.nar_hash, epoch, i.deriver, i.nar_size) for i in ordered])
            db.executemany("insert into Refs (referrer, reference) values (?, ?)",
                           [(ids[i.path], ids[r]) for i in ordered for r in sorted(set(i.references), key=ids.get)])
            db.execute("commit")
            db.execute("vacuum")
        finally:
            db.close()
        with open(name, "rb") as f:
            return f.read()


def layer_entries(kind: str, items: list[Item], roots: list[str], epoch: int) -> dict:
    """The store database's files as extrafiles entries: parts -> (kind, value)."""
    entries: dict[tuple[str, ...], tuple[str, object]] = {}

    def add(name: str, kind_: str, value) -> None:
        parts = tuple(name.split("/"))
        for i in range(1, len(parts)):
            entries.setdefault(parts[:i], ("dir", 0o755))
        entries[parts] = (kind_, value)

    add(DB_FILES[kind], "file", (database(kind, items, epoch), 0o644))
    if kind == "nix":
        add("nix/var/nix/db/schema", "file", (NIX_SCHEMA_VERSION, 0o644))
        for root in roots:
            add("nix/var/nix/gcroots/docker/" + root.rsplit("/", 1)[1], "link", root)
        return entries
    add("var/guix/profiles", "dir", 0o755)
    add("var/guix/gcroots/profiles", "link", "/var/guix/profiles")
    if len(roots) == 1:
        add("var/guix/profiles/per-user/root/guix-profile-1-link", "link", roots[0])
        add("var/guix/profiles/per-user/root/guix-profile", "link", "guix-profile-1-link")
    return entries
