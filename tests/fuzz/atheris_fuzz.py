#!/usr/bin/env python3
"""Coverage-guided fuzzing of one parser with atheris (libFuzzer for Python).

    tests/fuzz/atheris_fuzz.py TARGET [libFuzzer options, e.g. -runs=20000 -max_total_time=60]

TARGET is a name in targets.BYTE_TARGETS (`list` prints them), or `all`:
one fuzzer for every target, the first byte of each input choosing which
(the seeds get that byte put in front).  The seed
corpus tests/fuzz/corpus/<target>/ is read, never written: what the fuzzer
finds goes to the first directory given, else to a temp dir.  An input that raises
anything but a LayerpipeError, or takes longer than targets.TIME_LIMIT, is a
crash: libFuzzer prints it and writes it to crash-<sha1> (see -artifact_prefix);
keep it as an @example in tests/test_fuzz.py once fixed.  libFuzzer's last
line, `Done N runs in S second(s)`, counts the inputs run.
"""
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [os.path.join(REPO, "lib"), REPO]

import atheris  # noqa: E402

with atheris.instrument_imports(include=["layerpipe"]):
    import layerpipe.base_image, layerpipe.closure_read, layerpipe.graph_formats  # noqa: E401,E402,F401
    import layerpipe.image_assemble, layerpipe.layer_split, layerpipe.layerscan  # noqa: E401,E402,F401
    import layerpipe.previous, layerpipe.profile, layerpipe.records, layerpipe.sexp  # noqa: E401,E402,F401
    import layerpipe.storepath, layerpipe.graph, layerpipe.strategies  # noqa: E401,E402,F401  # pyflakes: ignore

from tests.fuzz import targets  # noqa: E402

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def _tagged_seeds(names: list[str]) -> str:
    """A temp dir with every target's seeds, each behind its target's byte."""
    out = tempfile.mkdtemp(prefix="layerpipe-fuzz-seeds-")
    for i, name in enumerate(names):
        folder = os.path.join(SEEDS, name)
        for seed in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, seed), "rb") as src, open(os.path.join(out, f"{name}-{seed}"), "wb") as dst:
                dst.write(bytes([i]) + src.read())
    return out


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in [*targets.BYTE_TARGETS, "all"]:
        print("targets: all " + " ".join(targets.BYTE_TARGETS), file=sys.stderr)
        raise SystemExit(0 if sys.argv[1:2] == ["list"] else 2)
    name = sys.argv[1]
    args = [sys.argv[0], *sys.argv[2:]]
    if not any(not a.startswith("-") for a in args[1:]):
        args.append(tempfile.mkdtemp(prefix=f"layerpipe-fuzz-{name}-"))
    if name == "all":
        names = sorted(targets.BYTE_TARGETS)
        args.append(_tagged_seeds(names))

        def one(data: bytes) -> None:
            if data:
                which = names[data[0] % len(names)]
                targets.settle(which, targets.BYTE_TARGETS[which], data[1:])
    else:
        fn = targets.BYTE_TARGETS[name]
        args += [d for d in [os.path.join(SEEDS, name)] if os.path.isdir(d)]

        def one(data: bytes) -> None:
            targets.settle(name, fn, data)

    atheris.Setup(args, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
