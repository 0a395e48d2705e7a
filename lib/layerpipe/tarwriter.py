"""A deterministic tar writer for store items.

Every byte of the output follows from the names, contents, exec bits and
symlink targets of the files, and from the given mtime, so the same store
contents always give the same tar.  The rules (man/layer-tar.1):

- ustar headers; a PAX extended header (named `././@PaxHeader`) only where
  ustar cannot hold a value: names or link targets over 100 bytes or not
  ASCII (with `hdrcharset=BINARY` for names that are not UTF-8), sizes of
  8 GiB and more;
- owner and group 0 with empty names, device numbers 0, one fixed mtime;
- modes as a store holds them: directories 0555, files 0555 or 0444 after
  their owner exec bit, symlinks 0777 (never followed, not even when an
  entry is swapped for one while the tree is read): no setuid, setgid or
  sticky bits, no devices, FIFOs or sockets (refused);
- every file written in full: st_nlink is ignored, so a store deduplicated
  with hard links gives the same tar as one that is not;
- entries in depth-first order, each directory's children sorted by the
  bytes of their names, parent directories before their contents;
- no padding after the two zero blocks that end the archive.
"""
import os
import stat
import zlib
from typing import IO, Callable, Iterator

from .errors import LayerpipeError

BLOCK = 512
CHUNK = 1 << 20
# Chunks under this size are gathered into CHUNK-sized writes: a store holds
# tens of thousands of small files, and each write to the sink costs a hash
# update and a compressor call whatever its size.
SMALL = 256 << 10
_MAX_OCTAL_SIZE = 0o77777777777
_REGTYPE, _SYMTYPE, _DIRTYPE, _PAXTYPE = b"0", b"2", b"5", b"x"


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d" % length + body


def _fits_ustar(value: bytes) -> bool:
    return len(value) <= 100 and value.isascii()


_IDS = _octal(0, 8) * 2                                        # uid, gid
_TAIL = b"ustar\x0000" + b"\0" * 64 + _octal(0, 8) * 2 + b"\0" * 167   # magic ... padding


def _header(name: bytes, mode: int, size: int, mtime: int, kind: bytes, link: bytes = b"") -> bytes:
    block = b"".join((name[:100].ljust(100, b"\0"),
                      b"%07o\0%s%011o\0%011o\0        " % (mode, _IDS, size if size <= _MAX_OCTAL_SIZE else 0, mtime),
                      kind, link[:100].ljust(100, b"\0"), _TAIL))
    # The sum of the bytes, in C: each half sums to at most 256 * 255, under
    # Adler-32's modulus 65521, so its first sum (which starts at 1) is exact.
    checksum = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
    return b"%s%06o\0 %s" % (block[:148], checksum, block[156:])


def _ascii_fallback(value: bytes) -> bytes:
    return bytes(c if 32 <= c < 127 else 0x5F for c in value[:100])


class TarWriter:
    """Streams tar entries to SINK, in the order they are added."""

    def __init__(self, sink: Callable[[bytes], None], mtime: int):
        self.sink = sink
        self.mtime = mtime
        self._buf = bytearray()

    def _emit(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self.sink(bytes(self._buf))
            self._buf.clear()

    def _entry_header(self, name: bytes, mode: int, size: int, kind: bytes, link: bytes = b"") -> None:
        pax = []
        if not _fits_ustar(link):
            pax.append((b"linkpath", link))
        if not _fits_ustar(name):
            pax.append((b"path", name))
        if size > _MAX_OCTAL_SIZE:
            pax.append((b"size", b"%d" % size))
        if pax:
            try:
                name.decode("utf-8"), link.decode("utf-8")
            except UnicodeDecodeError:
                pax.insert(0, (b"hdrcharset", b"BINARY"))
            data = b"".join(_pax_record(k, v) for k, v in pax)
            self._emit(_header(b"././@PaxHeader", 0o644, len(data), self.mtime, _PAXTYPE))
            self._emit(data + b"\0" * (-len(data) % BLOCK))
            # Only values the PAX header carries get a lossy ustar stand-in.
            name = name if _fits_ustar(name) else _ascii_fallback(name)
            link = link if _fits_ustar(link) else _ascii_fallback(link)
        self._emit(_header(name, mode, size, self.mtime, kind, link))

    def add_dir(self, name: bytes, mode: int = 0o555) -> None:
        self._entry_header(name.rstrip(b"/") + b"/", mode, 0, _DIRTYPE)

    def add_symlink(self, name: bytes, target: bytes) -> None:
        self._entry_header(name, 0o777, 0, _SYMTYPE, target)

    def add_file(self, name: bytes, mode: int, size: int, chunks: Iterator[bytes]) -> None:
        self._entry_header(name, mode, size, _REGTYPE)
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > size:
                break
            if len(chunk) < SMALL:
                self._emit(chunk)
            else:
                self.flush()
                self.sink(chunk)
        if written != size:
            raise LayerpipeError("file changed size while being read")
        self._emit(b"\0" * (-size % BLOCK))

    def close(self) -> None:
        self._emit(b"\0" * (2 * BLOCK))
        self.flush()


def _read_chunks(f: IO[bytes], size: int, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    """The file's bytes, in reads of at most CHUNK sized to the file (a read
    of CHUNK allocates CHUNK), and one byte more, so that a file that grew
    since its stat is noticed.  F is unbuffered."""
    left = size + 1
    while chunk := f.read(min(CHUNK, left)):
        if on_bytes:
            on_bytes(len(chunk))
        yield chunk
        left = max(1, left - len(chunk))


def parent_dirs(store_path: str) -> list[bytes]:
    """`gnu/`, `gnu/store/` for `/gnu/store/…-x`: the directories above an item."""
    parts = store_path.strip("/").split("/")[:-1]
    return [os.fsencode("/".join(parts[:i + 1])) for i in range(len(parts))]


_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def add_tree(tar: TarWriter, fs_path: bytes, name: bytes,
             on_bytes: Callable[[int], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> None:
    """Add the tree at FS_PATH as NAME, depth first, children sorted by name.

    Below FS_PATH every entry is reached through its directory's descriptor
    and opened with O_NOFOLLOW: a file or directory swapped for a symlink
    while the tree is read is refused, never followed out of the tree (and
    no name is limited by PATH_MAX)."""
    # (directory fd or None, name in it, name in the tar, path for messages); ints: fds to close
    stack: list = [(None, fs_path, name, fs_path)]
    try:
        while stack:
            if should_stop and should_stop():
                raise LayerpipeError("stopped")  # another layer failed: its error is the one shown
            item = stack.pop()
            if isinstance(item, int):
                os.close(item)
                continue
            try:
                _add_entry(tar, stack, *item, on_bytes)
            except OSError as exc:
                raise LayerpipeError(f"{os.fsdecode(item[3])}: {exc.strerror or exc}") from None
            except LayerpipeError as exc:
                raise LayerpipeError(f"{os.fsdecode(item[3])}: {exc.message}") from None
    finally:
        for item in stack:
            if isinstance(item, int):
                os.close(item)


def _add_entry(tar: TarWriter, stack: list, parent: int | None, entry: bytes, arcname: bytes, shown: bytes,
               on_bytes: Callable[[int], None] | None) -> None:
    mode = os.lstat(entry, dir_fd=parent).st_mode
    if stat.S_ISDIR(mode):
        fd = os.open(entry, _NOFOLLOW | os.O_DIRECTORY, dir_fd=parent)
        stack.append(fd)
        tar.add_dir(arcname)
        children = sorted((os.fsencode(c) for c in os.listdir(fd)), reverse=True)
        stack.extend((fd, c, arcname + b"/" + c, shown + b"/" + c) for c in children)
    elif stat.S_ISREG(mode):
        with os.fdopen(os.open(entry, _NOFOLLOW, dir_fd=parent), "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise LayerpipeError("changed while being read")
            tar.add_file(arcname, 0o555 if st.st_mode & 0o100 else 0o444, st.st_size,
                         _read_chunks(f, st.st_size, on_bytes))
    elif stat.S_ISLNK(mode):
        tar.add_symlink(arcname, os.readlink(entry, dir_fd=parent))
    else:
        raise LayerpipeError("special file (device, fifo or socket) in a store item")
