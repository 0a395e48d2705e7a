"""Coverage-guided fuzzing of the parsers with atheris (libFuzzer for Python).

    python3 tests/hostile/atheris_fuzz.py [libFuzzer options, e.g. -runs=100000 -max_total_time=600 CORPUS_DIR]

The first input byte picks the parser: a closure (closure_read), a record
stream (RecordReader, then the layer-split and image-assemble cores), a
layer blob of another tool (layerscan), a previous build's records.  Any
exception but LayerpipeError is a crash: libFuzzer stops, writes the input
to crash-<sha1> and exits non-zero.  tests/test_fuzz.py runs a short
campaign when atheris is installed.
"""
import io
import os
import sys
import tempfile

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lib"))

with atheris.instrument_imports():
    from layerpipe import closure_read, image_assemble, layer_split, layerscan, previous
    from layerpipe.errors import LayerpipeError
    from layerpipe.records import RecordReader

PREVIOUS = os.path.join(tempfile.mkdtemp(prefix="layerpipe-atheris-"), "previous.ndjson")


def _closure(data: bytes) -> None:
    closure_read.closure_read(io.BufferedReader(io.BytesIO(data)), "fuzz", io.BytesIO(), root="/nonexistent")


def _records(data: bytes) -> None:
    layer_split.layer_split(RecordReader(io.BytesIO(data), "fuzz"), io.BytesIO(), strategy="stable",
                            max_layers=10)


def _collect(data: bytes) -> None:
    layers, _, _ = image_assemble.collect(RecordReader(io.BytesIO(data), "fuzz"))
    image_assemble.check_options(layers, image_assemble.Options())


def _layer(data: bytes) -> None:
    layerscan.scan_layer(io.BytesIO(data), len(data), "fuzz")


def _previous(data: bytes) -> None:
    with open(PREVIOUS, "wb") as f:
        f.write(data)
    previous.read_previous(PREVIOUS, "/gnu/store")


TARGETS = [_closure, _records, _collect, _layer, _previous]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    try:
        TARGETS[data[0] % len(TARGETS)](data[1:])
    except LayerpipeError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
