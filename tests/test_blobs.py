"""blobs: one pass from tar bytes to a stored, hashed, compressed blob."""
import gzip
import hashlib
import os
import random
import stat
import struct
import zlib

import pytest
import zstandard

from layerpipe.blobs import (MEDIA_TYPES, BlobWriter, blob_path, check_level, compress_bytes, compression_of,
                             hash_file)
from layerpipe.errors import LayerpipeError


def mixed_data(size: int, seed: int = 1) -> bytes:
    """Text-like runs and incompressible runs, as a tar of a store has."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnop") for _ in range(rnd.randint(2, 9))) for _ in range(400)]
    parts, total = [], 0
    while total < size:
        part = rnd.randbytes(4096) if rnd.random() < 0.3 else b" ".join(rnd.choices(words, k=600))
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


def store(tmp_path, data: bytes, compression: str, chunk: int = 1 << 20, threads: int = 1, level=None):
    writer = BlobWriter(str(tmp_path), compression, level, threads)
    for i in range(0, len(data), chunk):
        writer.write(data[i:i + chunk])
    return writer.finish()


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_ids_sizes_and_place(tmp_path, compression):
    data = mixed_data(300_000)
    info = store(tmp_path, data, compression, chunk=70_001)
    blob = tmp_path / "blobs" / "sha256" / info.digest.split(":")[1]
    assert info.path == str(blob) and os.path.isabs(info.path)
    raw = blob.read_bytes()
    assert info.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert info.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (info.size, info.uncompressed_size) == (len(raw), len(data))
    assert info.mediaType == MEDIA_TYPES[compression]
    assert stat.S_IMODE(os.stat(blob).st_mode) == 0o444
    assert [p for p in os.listdir(blob.parent) if p != blob.name] == []  # no temp file left


def test_gzip_and_zstd_blobs_decompress_to_the_input(tmp_path):
    data = mixed_data(500_000)
    gz = store(tmp_path, data, "gzip")
    zs = store(tmp_path, data, "zstd")
    assert gzip.decompress(open(gz.path, "rb").read()) == data
    assert zstandard.ZstdDecompressor().decompressobj().decompress(open(zs.path, "rb").read()) == data
    assert store(tmp_path, data, "none").digest == gz.diff_id == zs.diff_id


def test_uncompressed_blob_is_the_input(tmp_path):
    data = mixed_data(10_000)
    info = store(tmp_path, data, "none")
    assert open(info.path, "rb").read() == data and info.digest == info.diff_id


def test_gzip_header_has_no_time_stamp_or_file_name(tmp_path):
    info = store(tmp_path, mixed_data(50_000), "gzip")
    raw = open(info.path, "rb").read()
    magic, method, flags, mtime = raw[:2], raw[2], raw[3], struct.unpack("<I", raw[4:8])[0]
    assert (magic, method) == (b"\x1f\x8b", 8)
    assert flags == 0        # no FNAME, FCOMMENT, FEXTRA, FHCRC
    assert mtime == 0
    assert raw[-4:] == struct.pack("<I", 50_000)  # ISIZE: one member
    # Python's own gzip module writes the time unless told otherwise: ours must not be its output.
    assert raw[:10] != gzip.compress(b"", mtime=12345)[:10]


def test_gzip_levels(tmp_path):
    data = mixed_data(400_000)
    fast, best = store(tmp_path, data, "gzip", level=1), store(tmp_path, data, "gzip", level=9)
    assert best.size < fast.size
    assert gzip.decompress(open(best.path, "rb").read()) == data
    assert store(tmp_path, data, "gzip", level=6).digest == store(tmp_path / "again", data, "gzip").digest


def test_zstd_has_a_checksum_and_is_one_frame(tmp_path):
    info = store(tmp_path, mixed_data(100_000), "zstd")
    raw = open(info.path, "rb").read()
    params = zstandard.get_frame_parameters(raw)
    assert params.has_checksum


def test_zstd_output_does_not_depend_on_threads_or_chunking(tmp_path):
    """The determinism claim: libzstd's multi-threaded mode gives the same
    frame for any worker count >= 1 and however the input is fed to it."""
    data = mixed_data(8 << 20)
    digests = {(threads, chunk): store(tmp_path / f"{threads}-{chunk}", data, "zstd", chunk=chunk,
                                       threads=threads).digest
               for threads, chunk in [(1, 1 << 20), (2, 1 << 20), (2, 65536), (4, 1_000_003)]}
    assert len(set(digests.values())) == 1, digests
    # ... and that is not trivially so: level changes the bytes.
    assert store(tmp_path / "l19", data[:1 << 20], "zstd", level=19).digest != \
        store(tmp_path / "l3", data[:1 << 20], "zstd").digest


def test_gzip_output_does_not_depend_on_chunking(tmp_path):
    data = mixed_data(3 << 20)
    assert store(tmp_path / "a", data, "gzip", chunk=1 << 20).digest == \
        store(tmp_path / "b", data, "gzip", chunk=12_345).digest


def test_abort_removes_the_temp_file(tmp_path):
    writer = BlobWriter(str(tmp_path), "gzip")
    writer.write(b"partial")
    folder = tmp_path / "blobs" / "sha256"
    assert len(os.listdir(folder)) == 1 and os.listdir(folder)[0].startswith(".tmp")
    writer.abort()
    assert os.listdir(folder) == []


def test_same_blob_twice_is_one_file(tmp_path):
    data = mixed_data(20_000)
    a, b = store(tmp_path, data, "gzip"), store(tmp_path, data, "gzip")
    assert a == b and os.listdir(tmp_path / "blobs" / "sha256") == [a.digest.split(":")[1]]


def test_empty_stream(tmp_path):
    info = store(tmp_path, b"", "gzip")
    assert info.diff_id == "sha256:" + hashlib.sha256(b"").hexdigest()
    assert gzip.decompress(open(info.path, "rb").read()) == b""


@pytest.mark.parametrize("compression, level", [("gzip", 10), ("gzip", -1), ("zstd", 0), ("zstd", 20),
                                                ("none", 1), ("bzip2", None)])
def test_bad_levels_and_compressions_are_refused(tmp_path, compression, level):
    with pytest.raises(LayerpipeError):
        check_level(compression, level)
    with pytest.raises(LayerpipeError):
        BlobWriter(str(tmp_path), compression, level)


@pytest.mark.parametrize("compression, default", [("gzip", 6), ("zstd", 3), ("none", 0)])
def test_default_levels(compression, default):
    assert check_level(compression, None) == default


def test_compress_bytes_matches_blob_writer(tmp_path):
    data = mixed_data(30_000)
    for compression in ("gzip", "zstd", "none"):
        assert hashlib.sha256(compress_bytes(data, compression)).hexdigest() == \
            store(tmp_path, data, compression).digest.split(":")[1]


def test_helpers(tmp_path):
    assert blob_path("/x", "sha256:" + "a" * 64) == "/x/blobs/sha256/" + "a" * 64
    assert compression_of(MEDIA_TYPES["zstd"]) == "zstd" and compression_of("text/plain") is None
    (tmp_path / "f").write_bytes(b"abc")
    assert hash_file(str(tmp_path / "f")) == ("sha256:" + hashlib.sha256(b"abc").hexdigest(), 3)


def test_zlib_gzip_wrapper_is_what_we_claim():
    """The gzip recipe the module documents: zlib's wrapper (wbits 16+15)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9)
    assert compress_bytes(b"hello", "gzip") == comp.compress(b"hello") + comp.flush()
