"""The top layer image-assemble adds for what lies outside the store.

`/tmp` (mode 1777, as programs expect a writable /tmp) and the links asked
for with --symlink, Guix `-S` style: `/bin=bin` makes /bin a link to the
root profile's `bin`.  Built in memory: it holds a handful of entries.
"""
import os

from .errors import UsageError
from .tarwriter import TarWriter


def parse_symlink(spec: str, profile: str | None) -> tuple[str, str]:
    """`/bin=bin` -> ("bin", "<profile>/bin"): the link's name in the tar and its target."""
    source, sep, target = spec.partition("=")
    if not sep or not source.startswith("/") or not target:
        raise UsageError(f"--symlink {spec!r}: expected /SOURCE=TARGET")
    parts = source.strip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"--symlink {spec!r}: SOURCE must not contain '.', '..' or '//'")
    if not target.startswith("/"):
        if profile is None:
            raise UsageError(f"--symlink {spec!r}: a relative TARGET needs exactly one root "
                             "in the closure (the profile); give an absolute target")
        target = f"{profile}/{target}"
    return "/".join(parts), target


def top_entries(symlinks: list[tuple[str, str]]) -> dict[tuple[str, ...], tuple[str, object]]:
    """/tmp, the symlinks and the directories above them: parts -> (kind, mode or target)."""
    entries: dict[tuple[str, ...], tuple[str, object]] = {("tmp",): ("dir", 0o1777)}
    for name, target in symlinks:
        parts = tuple(name.split("/"))
        for i in range(1, len(parts)):
            kind = entries.setdefault(parts[:i], ("dir", 0o755))[0]
            if kind != "dir":
                raise UsageError(f"--symlink /{name}: /{'/'.join(parts[:i])} is a link already")
        if parts in entries:
            raise UsageError(f"--symlink /{name}: given twice or clashes with /tmp")
        entries[parts] = ("link", target)
    return entries


def tree_entries(entries: dict[tuple[str, ...], tuple[str, object]]) -> dict[str, tuple[str, str, int]]:
    """ENTRIES as imagetree lists a layer: name -> (kind, link target, mode)."""
    kinds = {"dir": lambda v: ("dir", "", v), "link": lambda v: ("link", v, 0o777),
             "file": lambda v: ("file", "", v[1])}
    return {"/".join(parts): kinds[kind](value) for parts, (kind, value) in entries.items()}


def entries_tar(entries: dict[tuple[str, ...], tuple[str, object]], mtime: int) -> bytes:
    """The tar of ENTRIES, sorted by name: directories (mode), links (target) and
    files ((contents, mode))."""
    chunks: list[bytes] = []
    tar = TarWriter(chunks.append, mtime)
    for parts in sorted(entries, key=lambda p: tuple(os.fsencode(c) for c in p)):
        kind, value = entries[parts]
        name = os.fsencode("/".join(parts))
        if kind == "dir":
            tar.add_dir(name, value)
        elif kind == "link":
            tar.add_symlink(name, os.fsencode(value))
        else:
            data, mode = value
            tar.add_file(name, mode, len(data), iter([data]))
    tar.close()
    return b"".join(chunks)


def top_layer_tar(symlinks: list[tuple[str, str]], mtime: int) -> bytes:
    """The tar of /tmp, the symlinks and the directories above them, sorted."""
    return entries_tar(top_entries(symlinks), mtime)
