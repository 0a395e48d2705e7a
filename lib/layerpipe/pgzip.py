"""gzip on every core, with output that does not depend on the core count.

The input is cut into blocks of exactly BLOCK bytes.  Each block is deflated
on its own (zlib releases the GIL, so threads run in parallel), primed with
the last 32 KiB of the block before it as a dictionary, and ended with a sync
flush; the last block is ended with Z_FINISH.  Concatenated, the pieces are
one deflate stream (the way pigz builds its output), wrapped in a gzip header
with mtime 0 and no name, and the CRC-32 and length of the whole input.

The bytes depend only on the input, the level and BLOCK, never on how many
threads ran or how the input was chunked when written: that is what makes
layer digests reproducible across machines.  BLOCK is part of the layer
format (blobs.TAR_FORMAT records it).
"""
import struct
import zlib
from collections import deque
from concurrent.futures import Executor, Future

BLOCK = 1 << 20
WINDOW = 32 << 10


def _deflate(data: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY,
                            **({"zdict": dictionary} if dictionary else {}))
    return comp.compress(data) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _header(level: int) -> bytes:
    xfl = 2 if level == 9 else 4 if level == 1 else 0  # as zlib and gzip set it
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 3])


class ParallelGzip:
    """A compressor object (compress/flush) whose blocks deflate on POOL."""

    def __init__(self, level: int, pool: Executor | None, in_flight: int = 4):
        self.level, self.pool = level, pool
        self.in_flight = max(1, in_flight)
        self.pending: bytearray = bytearray()
        self.previous_tail = b""
        self.crc, self.length = 0, 0
        self.queue: deque[Future | bytes] = deque()
        self.started = False

    def _submit(self, block: bytes, last: bool) -> None:
        args = (block, self.previous_tail, self.level, last)
        self.queue.append(self.pool.submit(_deflate, *args) if self.pool else _deflate(*args))
        self.previous_tail = block[-WINDOW:]

    def _drain(self, keep: int) -> bytes:
        out = []
        if not self.started:
            out.append(_header(self.level))
            self.started = True
        while len(self.queue) > keep:
            item = self.queue.popleft()
            out.append(item if isinstance(item, bytes) else item.result())
        return b"".join(out)

    def compress(self, data: bytes) -> bytes:
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self.pending += data
        if len(self.pending) < BLOCK:
            return b""
        cut = len(self.pending) - len(self.pending) % BLOCK
        view = bytes(self.pending[:cut])
        del self.pending[:cut]
        for at in range(0, cut, BLOCK):
            self._submit(view[at:at + BLOCK], False)
        return self._drain(self.in_flight)

    def flush(self) -> bytes:
        self._submit(bytes(self.pending), True)
        self.pending.clear()
        return self._drain(0) + struct.pack("<II", self.crc & 0xFFFFFFFF, self.length & 0xFFFFFFFF)

    def cancel(self) -> None:
        for item in self.queue:
            if isinstance(item, Future):
                item.cancel()
        self.queue.clear()
