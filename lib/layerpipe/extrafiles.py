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


def top_layer_tar(symlinks: list[tuple[str, str]], mtime: int) -> bytes:
    """The tar of /tmp, the symlinks and the directories above them, sorted."""
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
    chunks: list[bytes] = []
    tar = TarWriter(chunks.append, mtime)
    for parts in sorted(entries, key=lambda p: tuple(os.fsencode(c) for c in p)):
        kind, value = entries[parts]
        name = os.fsencode("/".join(parts))
        if kind == "dir":
            tar.add_dir(name, value)
        else:
            tar.add_symlink(name, os.fsencode(value))
    tar.close()
    return b"".join(chunks)
