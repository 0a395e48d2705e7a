"""The layer cache: from what determines a layer's bytes to the blob holding them.

Store items are immutable, so a layer's tar and blob follow from its member
paths and the settings: compression and level, SOURCE_DATE_EPOCH, the tar
rules (TAR_FORMAT), the gzip block size or zstd job size, the compressor's
version and the --relocate mappings.  The
key is the sha256 of those, canonically serialised; the entry, a small JSON
file `<blob dir>/index/<key>`, names the blob and its digests.  A rebuild
whose layer members did not change reads no store file for that layer.

Entries are written after their blob, each through a temp file and a rename,
so a crash (even kill -9) never leaves an entry without its blob; two runs
writing the same entry write the same bytes.  An entry whose blob is gone or
has another size is a miss.  A hit touches the entry, so `prune` can drop
what no build used for a while.
"""
import hashlib
import os
import tempfile
import time
import zlib

import orjson
import zstandard

from .blobs import ZSTD_JOB, BlobInfo, blob_path
from .pgzip import BLOCK

# Bump when the same store contents could give other tar bytes.
TAR_FORMAT = 1


def layer_key(paths: list[str], compression: str, level: int, mtime: int,
              relocate: list[list[str]] | None = None) -> str:
    versions = {"gzip": zlib.ZLIB_RUNTIME_VERSION, "zstd": zstandard.ZSTD_VERSION, "none": ""}
    settings = {"tar_format": TAR_FORMAT, "paths": sorted(paths), "compression": compression,
                "level": level, "mtime": mtime, "gzip_block": BLOCK,
                "compressor": str(versions[compression])}
    if compression == "zstd":
        settings["zstd_job"] = ZSTD_JOB
    if relocate:  # absent otherwise, so keys made before --relocate existed stay valid
        settings["relocate"] = relocate
    return hashlib.sha256(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Cache:
    def __init__(self, blob_dir: str):
        self.blob_dir = blob_dir
        self.index = os.path.join(blob_dir, "index")

    def lookup(self, key: str) -> BlobInfo | None:
        entry = os.path.join(self.index, key)
        try:
            with open(entry, "rb") as f:
                info = BlobInfo(**orjson.loads(f.read()))
            if os.stat(info.path).st_size != info.size or info.path != blob_path(self.blob_dir, info.digest):
                return None
            os.utime(entry)
        except (OSError, ValueError, TypeError):
            return None
        return info

    def store(self, key: str, info: BlobInfo) -> None:
        os.makedirs(self.index, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.index, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(info.__dict__, option=orjson.OPT_SORT_KEYS))
            os.replace(tmp, os.path.join(self.index, key))
        except BaseException:
            os.unlink(tmp)
            raise

    def prune(self, max_age_days: float) -> tuple[int, int]:
        """Drop entries unused for MAX_AGE_DAYS, then blobs and temp files no
        entry names that are as old; returns (entries, blobs) removed."""
        cutoff = time.time() - max_age_days * 86400
        entries = blobs = 0
        keep = set()
        for name in _listdir(self.index):
            path = os.path.join(self.index, name)
            if os.lstat(path).st_mtime < cutoff:
                os.unlink(path)
                entries += 1
            elif not name.startswith(".tmp-"):
                try:
                    with open(path, "rb") as f:
                        keep.add(os.path.basename(orjson.loads(f.read())["path"]))
                except (OSError, ValueError, KeyError):
                    pass
        folder = os.path.join(self.blob_dir, "blobs", "sha256")
        for name in _listdir(folder):
            path = os.path.join(folder, name)
            if name not in keep and os.lstat(path).st_mtime < cutoff:
                os.unlink(path)
                blobs += 1
        return entries, blobs


def _listdir(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
