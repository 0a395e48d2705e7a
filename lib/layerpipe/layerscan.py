"""Checking a layer tar that someone else made, in one pass over its blob.

scan_layer() reads the blob once: the stored bytes feed the digest, the
uncompressed bytes feed the diff_id and a tar reader that looks at every
entry header (never at file contents).  It refuses what a container engine
could be tricked with or could choke on:

- entry names that are absolute or climb out with `..`, hard links whose
  target does, and entries that would be written through a symbolic link
  made earlier in the same layer (`lib -> /etc`, then `lib/passwd`);
- more than MAX_ENTRIES entries, a single header larger than MAX_HEADER,
  or more uncompressed bytes than BOMB_FLOOR + BOMB_RATIO times the blob's
  size (a decompression bomb);
- bytes other than zeros after the end of the archive, where a lenient
  reader might find more entries than this one checked.
"""
import hashlib
import io
import tarfile
from dataclasses import dataclass
from typing import IO

from .errors import LayerpipeError
from .formats.source import decompressed

CHUNK = 1 << 20
MAX_ENTRIES = 1_000_000
MAX_HEADER = 1 << 20
BOMB_RATIO = 200
BOMB_FLOOR = 256 << 20


@dataclass
class ScannedLayer:
    digest: str
    size: int
    diff_id: str
    compression: str  # gzip, zstd or none, by the blob's first bytes
    entries: int


class _Hashing:
    """The blob as stored: hashed and counted as it is read."""

    def __init__(self, stream: IO[bytes]):
        self.stream, self.hash, self.size = stream, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data


class _Bounded(io.RawIOBase):
    """The uncompressed tar for tarfile: hashed, limited, seekable forwards only."""

    def __init__(self, stream: IO[bytes], limit: int, where: str):
        self.stream, self.limit, self.where = stream, limit, where
        self.hash, self.pos = hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        """What tarfile reads: headers (PAX ones too) and single blocks, never more."""
        if n is None or n < 0 or n > MAX_HEADER:
            raise LayerpipeError(f"a tar header larger than {MAX_HEADER} bytes", self.where)
        return self._read(n)

    def _read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.pos += len(data)
        if self.pos > self.limit:
            raise LayerpipeError(f"expands to more than {self.limit} bytes: a decompression bomb?", self.where)
        self.hash.update(data)
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self.pos:
            raise LayerpipeError("tar reader went backwards (internal error)", self.where)
        while self.pos < offset and self._read(min(CHUNK, offset - self.pos)):
            pass
        return self.pos

    def drain(self) -> bool:
        """Read to the end; True when all that was left is zeros."""
        zeros = True
        while data := self._read(CHUNK):
            zeros = zeros and not data.strip(b"\0")
        return zeros


def _parts(name: str) -> list[str] | None:
    """The components of an entry name, or None when it is absolute or climbs out."""
    if name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return None if ".." in parts else parts


def _check_entry(member: tarfile.TarInfo, symlinks: set[str], where: str) -> None:
    parts = _parts(member.name)
    if parts is None:
        raise LayerpipeError(f"entry {member.name!r} leaves the image root", where)
    paths = [parts]
    if member.islnk():
        target = _parts(member.linkname)
        if target is None:
            raise LayerpipeError(f"hard link {member.name!r} points outside the image root ({member.linkname!r})", where)
        paths.append(target)
    for path in paths:
        for i in range(1, len(path)):
            if "/".join(path[:i]) in symlinks:
                raise LayerpipeError(f"entry {member.name!r} goes through the symbolic link "
                                     f"{'/'.join(path[:i])!r} of the same layer", where)
    name = "/".join(parts)
    if member.issym():
        symlinks.add(name)
    else:
        symlinks.discard(name)


def scan_layer(stream: IO[bytes], stored_size: int, where: str, digest: str | None = None) -> ScannedLayer:
    """Digest, diff_id and compression of the blob in STREAM, once its entries
    pass.  A blob that is not the DIGEST it should be is reported as such,
    whatever else is wrong with it."""
    raw = _Hashing(stream)
    try:
        return _scan(raw, stored_size, where)
    except LayerpipeError:
        if digest is not None:
            while raw.read(CHUNK):
                pass
            if "sha256:" + raw.hash.hexdigest() != digest:
                raise LayerpipeError(f"blob does not match its digest (it is sha256:{raw.hash.hexdigest()})",
                                     where) from None
        raise


def _scan(raw: _Hashing, stored_size: int, where: str) -> ScannedLayer:
    plain, compression = decompressed(raw)
    tar_stream = _Bounded(plain, BOMB_FLOOR + BOMB_RATIO * stored_size, where)
    symlinks: set[str] = set()
    count = 0
    try:
        with tarfile.open(fileobj=tar_stream, mode="r:") as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every header read; a million would weigh 500 MB
                count += 1
                if count > MAX_ENTRIES:
                    raise LayerpipeError(f"more than {MAX_ENTRIES} entries", where)
                _check_entry(member, symlinks, where)
        if not tar_stream.drain():
            raise LayerpipeError("data after the end of the tar archive", where)
        while raw.read(CHUNK):
            pass
    except LayerpipeError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise LayerpipeError(f"not a valid {'' if compression == 'none' else compression + ' '}tar: {exc}",
                             where) from None
    except Exception as exc:  # zstandard.ZstdError and zlib.error are not OSErrors
        if type(exc).__module__.split(".")[0] in ("zstandard", "zlib"):
            raise LayerpipeError(f"not a valid {compression} stream: {exc}", where) from None
        raise
    return ScannedLayer("sha256:" + raw.hash.hexdigest(), raw.size,
                        "sha256:" + tar_stream.hash.hexdigest(), compression, count)
