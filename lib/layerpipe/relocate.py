"""`layer-tar --relocate /gnu/store=/opt/store`: where store items go in the tar.

Only member names change, as the name transformations of Guix's docker code
do: `/gnu/store/…-x/bin/y` is written as `opt/store/…-x/bin/y`; file contents
and symbolic link targets are left as they are (a link to /gnu/store/… still
points there, for a runtime that provides the store at both places).
Mappings are checked before anything is written: absolute, normal, not the
root, no two FROMs inside one another, no two TOs inside one another, no TO
inside a FROM; and over the whole closure, no two store items may end up at
the same place or one inside another.
"""
import posixpath

from .errors import LayerpipeError, UsageError


def _inside(a: str, b: str) -> bool:
    """A is B or lies below it."""
    return a == b or a.startswith(b.rstrip("/") + "/")


def _directory(spec: str, value: str) -> str:
    if not value.startswith("/") or posixpath.normpath(value) != value or value == "/" \
            or any(p in (".", "..") for p in value.split("/")):
        raise UsageError(f"--relocate {spec!r}: {value!r} must be an absolute, normal directory "
                         "other than / (no '.', '..', '//' or trailing '/')")
    return value


class Relocation:
    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs

    @classmethod
    def parse(cls, specs: list[str]) -> "Relocation":
        pairs = []
        for spec in specs:
            source, sep, target = spec.partition("=")
            if not sep:
                raise UsageError(f"--relocate {spec!r}: expected FROM=TO, e.g. /gnu/store=/opt/store")
            pairs.append((_directory(spec, source), _directory(spec, target)))
        for i, (src, dst) in enumerate(pairs):
            if src == dst:
                raise UsageError(f"--relocate {src}={dst}: maps a directory to itself")
            for other_src, other_dst in pairs[i + 1:]:
                if _inside(src, other_src) or _inside(other_src, src):
                    raise UsageError(f"--relocate: {src} and {other_src} overlap")
                if _inside(dst, other_dst) or _inside(other_dst, dst):
                    raise UsageError(f"--relocate: {dst} and {other_dst} overlap: items could collide")
            for other_src, _ in pairs:
                if _inside(dst, other_src):
                    raise UsageError(f"--relocate {src}={dst}: {dst} is inside {other_src}, which is relocated")
        return cls(pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def key(self) -> list[list[str]]:
        return [list(p) for p in self.pairs]

    def apply(self, path: str) -> str:
        """Where the store item at PATH goes in the image."""
        for src, dst in self.pairs:
            if _inside(path, src):
                return dst + path[len(src):]
        return path

    def check(self, paths) -> None:
        """No two store items at one place, or one inside another, once moved."""
        placed: dict[str, str] = {}
        for path in sorted(set(paths)):
            moved = self.apply(path)
            if moved in placed:
                raise LayerpipeError(f"--relocate puts {path} at {moved}, where {placed[moved]} goes")
            placed[moved] = path
        for moved, path in placed.items():
            parts = moved.split("/")
            for i in range(2, len(parts)):
                above = "/".join(parts[:i])
                if above in placed:
                    raise LayerpipeError(f"--relocate puts {path} at {moved}, inside {placed[above]} ({above})")
