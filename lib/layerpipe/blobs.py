"""One pass from tar bytes to a stored blob: diff_id, compression, digest, file.

The uncompressed stream feeds the diff_id hash and the compressor; the
compressed stream feeds the digest hash and a temp file in the blob
directory, renamed to `blobs/sha256/<hex>` once complete.  Nothing is read
twice.  Compression is deterministic and uses every core:
- gzip: one member, mtime 0, no file name, deflated in 1 MiB blocks on a
  thread pool (pgzip): the same bytes for any thread count;
- zstd: libzstd with at least one worker thread and jobs of ZSTD_JOB bytes:
  its output depends on the job size, never on the worker count (it differs
  from single-threaded mode, never used).  2 MiB jobs (libzstd picks 8 MiB
  at level 3) keep a layer of a few MB on every core and the buffers small.
"""
import hashlib
import os
import tempfile
from concurrent.futures import Executor
from dataclasses import dataclass

import zstandard

from .errors import UsageError
from .pgzip import ParallelGzip

MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
DEFAULT_LEVELS = {"gzip": 6, "zstd": 3, "none": 0}
ZSTD_JOB = 2 << 20   # part of the layer format: in the cache key
LEVEL_RANGES = {"gzip": (0, 9), "zstd": (1, 19), "none": (0, 0)}


def default_blob_dir() -> str:
    """$XDG_CACHE_HOME/layerpipe, else ~/.cache/layerpipe."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "layerpipe")


def blob_path(blob_dir: str, digest: str) -> str:
    return os.path.join(blob_dir, "blobs", "sha256", digest.split(":", 1)[1])


def check_level(compression: str, level: int | None) -> int:
    if compression not in MEDIA_TYPES:
        raise UsageError(f"unknown compression {compression!r} (gzip, zstd, none)")
    if level is None:
        return DEFAULT_LEVELS[compression]
    low, high = LEVEL_RANGES[compression]
    if not low <= level <= high:
        raise UsageError(f"--level for {compression} must be between {low} and {high}")
    return level


def _compressor(compression: str, level: int, threads: int, pool: Executor | None = None):
    if compression == "gzip":
        return ParallelGzip(level, pool, in_flight=2 * max(1, threads))
    if compression == "zstd":
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=max(1, threads), job_size=ZSTD_JOB, write_checksum=True)
        return zstandard.ZstdCompressor(compression_params=params).compressobj()
    return None


@dataclass
class BlobInfo:
    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    path: str
    mediaType: str


class BlobWriter:
    """Takes tar bytes through write(); finish() stores the blob and describes it."""

    def __init__(self, blob_dir: str, compression: str = "gzip", level: int | None = None, threads: int = 1,
                 pool: Executor | None = None):
        self.compression = compression
        self.level = check_level(compression, level)
        self.dir = os.path.join(blob_dir, "blobs", "sha256")
        os.makedirs(self.dir, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        self.file = os.fdopen(fd, "wb")
        self.diff_hash, self.digest_hash = hashlib.sha256(), hashlib.sha256()
        self.raw_size = self.size = 0
        self.comp = _compressor(compression, self.level, threads, pool)

    def _store(self, data: bytes) -> None:
        if data:
            self.digest_hash.update(data)
            self.file.write(data)
            self.size += len(data)

    def write(self, data: bytes) -> None:
        self.diff_hash.update(data)
        self.raw_size += len(data)
        self._store(self.comp.compress(data) if self.comp else data)

    def finish(self) -> BlobInfo:
        if self.comp:
            self._store(self.comp.flush())
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp, 0o444)
        digest = "sha256:" + self.digest_hash.hexdigest()
        final = os.path.join(self.dir, digest.split(":", 1)[1])
        os.replace(self.tmp, final)
        return BlobInfo("sha256:" + self.diff_hash.hexdigest(), digest, self.size,
                        self.raw_size, os.path.abspath(final), MEDIA_TYPES[self.compression])

    def abort(self) -> None:
        if isinstance(self.comp, ParallelGzip):
            self.comp.cancel()
        self.file.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


MMAP_THRESHOLD = 256 << 10


def return_big_buffers() -> None:
    """Have glibc's malloc give every block of MMAP_THRESHOLD bytes or more
    its own mapping, returned to the system when freed.  Left to itself,
    glibc raises that threshold after the first such free, and the 1-2 MiB
    compression buffers that threads take and free then fragment the heap:
    peak RSS grew with the length of the run (layer-tar, zstd: 116 MB on the
    1 GB bench store, 131 MB on the 4 GB one; with this, 105 and 109 MB).
    Nothing happens where malloc is not glibc's."""
    try:
        import ctypes
        ctypes.CDLL(None).mallopt(-3, MMAP_THRESHOLD)   # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def compression_threads(sizes: dict[int, int], cpus: int, jobs: int) -> dict[int, int]:
    """Compression threads for each layer to build (SIZES: its bytes), JOBS
    at a time: a layer gets the share of the CPUs that its bytes are of all
    the bytes to compress, and at least an equal share of what runs at once.
    A rebuild in which one layer is new compresses it on every core.  The
    output does not depend on it (pgzip blocks, zstd jobs)."""
    total = sum(sizes.values()) or 1
    fair = max(1, cpus // max(1, min(jobs, len(sizes))))
    return {i: min(cpus, max(fair, round(cpus * size / total))) for i, size in sizes.items()}


def hash_file(path: str) -> tuple[str, int]:
    """sha256 digest and size of the file at PATH."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def compress_bytes(data: bytes, compression: str) -> bytes:
    """DATA compressed as BlobWriter would at the default level (small blobs)."""
    comp = _compressor(compression, DEFAULT_LEVELS[compression], 1)
    return comp.compress(data) + comp.flush() if comp else data


def compression_of(media_type: str) -> str | None:
    return next((c for c, m in MEDIA_TYPES.items() if m == media_type), None)
