"""Find references by scanning store items, the way Guix and Nix do.

An item refers to another when the other's hash part (32 nix-base32
characters) occurs anywhere in the item's NAR serialisation: in file
contents, symlink targets or the names of directory entries.  The NAR
framing (lengths, zero padding, tokens such as `contents`) cannot join two
strings into one run of nix-base32 characters, so scanning each of them on
its own finds exactly what a scan of the NAR finds.  Like Nix's RefScanSink,
every offset of a run of nix-base32 characters is tried.

Files are read in CHUNK-sized pieces, each overlapping the one before by 31
bytes so that a hash split across two reads is still found; pieces are
scanned by a pool of processes (CPython's bytes methods hold the GIL, so
threads would not use a second core).  Items of at most CHUNK bytes (most
of them) are walked by the workers too, whole; bigger ones are walked here
and handed out piece by piece.  Memory stays bounded: about two
pieces per worker, a window of batches waiting for them, and the names of
the one item being walked.
"""
import multiprocessing
import os
import signal
import stat
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterable, Iterator

from .errors import LayerpipeError
from .storepath import HASH_LEN, NIX32_ALPHABET

CHUNK = 8 << 20          # bytes read at once
OVERLAP = HASH_LEN - 1   # a hash split across two pieces lies within these bytes
BATCH_FILES = 256        # small files sent to a worker at once
INLINE_BYTES = 16 << 20  # below this much file data, scanning in-process beats starting workers

_ALPHABET = NIX32_ALPHABET.encode()
_MARKS = bytes(1 if i in _ALPHABET else 0 for i in range(256))
_RUN = b"\x01" * HASH_LEN

_candidates: frozenset = frozenset()  # a worker's hash parts to look for

# (item number, file, start, end); start -1: the whole item at that path, end its NAR size.
Piece = tuple[int, str, int, int]


def hashes_in(data: bytes, candidates) -> set[bytes]:
    """The CANDIDATES (32-byte hash parts) that occur in DATA, at any offset."""
    marks = data.translate(_MARKS)  # 1 where a nix-base32 character is: C speed
    found = set()
    start = marks.find(_RUN)
    while start >= 0:
        end = marks.find(b"\0", start + HASH_LEN)
        end = len(data) if end < 0 else end
        for i in range(start, end - HASH_LEN + 1):
            part = data[i:i + HASH_LEN]
            if part in candidates:
                found.add(part)
        start = marks.find(_RUN, end)
    return found


def _scan_jobs(jobs: list[Piece]) -> tuple[list[tuple[int, set[bytes]]], int]:
    """Scan file pieces and whole items; ([(item, hashes found)], bytes read)."""
    found, done = [], 0
    for item, path, start, end in jobs:
        if start < 0:  # a whole small item, walked here rather than in the parent
            strings: list[bytes] = []
            hits = set()
            for piece in walk_item(item, path, strings):
                hits |= _search_piece(*piece[1:])
                done += piece[3] - piece[2]
            hits |= hashes_in(b"/".join(strings), _candidates)
        else:
            hits = _search_piece(path, start, end)
            done += end - start
        if hits:
            found.append((item, hits))
    return found, done


def _search_piece(path: str, start: int, end: int) -> set[bytes]:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        begin = max(0, start - OVERLAP)
        data = os.pread(fd, end - begin, begin)
    finally:
        os.close(fd)
    return hashes_in(data, _candidates)


def _init_worker(candidates: frozenset) -> None:
    global _candidates
    _candidates = candidates
    # The parent reports ^C and SIGTERM once; workers just finish their piece.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def walk_item(item: int, fs_path: str, strings: list[bytes]) -> Iterator[Piece]:
    """The pieces of ITEM's files; names and link targets go to STRINGS."""
    st = os.lstat(fs_path)
    if stat.S_ISREG(st.st_mode):
        yield from _file_pieces(item, fs_path, st.st_size)
    elif stat.S_ISLNK(st.st_mode):
        strings.append(os.fsencode(os.readlink(fs_path)))
    elif stat.S_ISDIR(st.st_mode):
        with os.scandir(fs_path) as entries:
            children = list(entries)
        for entry in children:
            strings.append(os.fsencode(entry.name))
            yield from walk_item(item, entry.path, strings)
    else:
        raise LayerpipeError(f"{fs_path}: special file (not a regular file, directory or symlink) in a store item")


def _file_pieces(item: int, path: str, size: int) -> Iterator[Piece]:
    for start in range(0, size, CHUNK):
        yield item, path, start, min(size, start + CHUNK)


def _batches(pieces: Iterable[Piece]) -> Iterator[list[Piece]]:
    batch, size = [], 0
    for piece in pieces:
        batch.append(piece)
        size += piece[3] - max(piece[2], 0)
        if size >= CHUNK or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class Scanner:
    """Scans store items for the hash parts of CANDIDATES (hash part -> store
    path).  Worker processes start when a scan is big enough to need them and
    serve every later scan until close(), so --roots pays for them once."""

    def __init__(self, candidates: dict[bytes, str], jobs: int = 0):
        self.candidates = candidates
        self.hashes = frozenset(candidates)
        self.jobs = jobs or available_cpus()
        self._pool: ProcessPoolExecutor | None = None

    def references(self, items: list[str], fs_paths: list[str], advance: Callable[[int], None] = lambda n: None,
                   sizes: list[int] | None = None) -> dict[str, set[str]]:
        """For each of ITEMS (store paths, on disk at FS_PATHS): the store paths
        it refers to.  ADVANCE gets the bytes read.  SIZES (NAR sizes), when
        known, let workers walk small items themselves, and a small scan skip
        the workers altogether."""
        found: list[set[bytes]] = [set() for _ in items]

        def pieces() -> Iterator[Piece]:
            for i, fs_path in enumerate(fs_paths):
                if sizes is not None and sizes[i] <= CHUNK:
                    yield i, fs_path, -1, sizes[i]
                    continue
                strings: list[bytes] = []
                yield from walk_item(i, fs_path, strings)
                # Names and link targets are short: search them here, item by item.
                found[i] |= hashes_in(b"/".join(strings), self.hashes)

        small = sizes is not None and sum(sizes) < INLINE_BYTES
        if self.jobs == 1 or (self._pool is None and small):
            self._inline(_batches(pieces()), found, advance)
        else:
            self._in_pool(_batches(pieces()), found, advance)
        return {item: {self.candidates[h] for h in hits} for item, hits in zip(items, found)}

    def _inline(self, batches, found, advance) -> None:
        global _candidates
        saved, _candidates = _candidates, self.hashes
        try:
            for batch in batches:
                _collect(_scan_jobs(batch), found, advance)
        finally:
            _candidates = saved

    def _in_pool(self, batches, found, advance) -> None:
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_init_worker,
                                             initargs=(self.hashes,))
        pending = set()
        for batch in batches:
            if len(pending) >= 2 * self.jobs:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    _collect(future.result(), found, advance)
            pending.add(self._pool.submit(_scan_jobs, batch))
        for future in pending:
            _collect(future.result(), found, advance)

    def close(self, failed: bool = False) -> None:
        if self._pool is not None:
            # On an error or ^C, drop what is queued; workers end their piece and exit.
            self._pool.shutdown(wait=not failed, cancel_futures=failed)
            self._pool = None

    def __enter__(self) -> "Scanner":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(failed=kind is not None)


def scan_references(items: list[str], fs_paths: list[str], candidates: dict[bytes, str], *,
                    jobs: int = 0, advance: Callable[[int], None] = lambda n: None,
                    sizes: list[int] | None = None) -> dict[str, set[str]]:
    """One scan with a Scanner of its own."""
    with Scanner(candidates, jobs) as scanner:
        return scanner.references(items, fs_paths, advance, sizes)


def _collect(result, found, advance) -> None:
    hits, nbytes = result
    for item, hashes in hits:
        found[item] |= hashes
    advance(nbytes)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def store_listing(store_fs: str, store_dir: str) -> dict[bytes, str]:
    """Hash part -> store path for every item in the store directory at STORE_FS.

    Nix leaves NAME.lock (and, while building, NAME.chroot) beside an item;
    they share its hash part, and the shortest name is the item.
    """
    from .storepath import split_store_path
    listing: dict[bytes, str] = {}
    for name in sorted(os.listdir(store_fs), key=len, reverse=True):
        try:
            split_store_path(f"{store_dir}/{name}")
        except LayerpipeError:
            continue  # .links, trash, temporary files: not store items
        listing[name[:HASH_LEN].encode()] = f"{store_dir}/{name}"
    return listing
