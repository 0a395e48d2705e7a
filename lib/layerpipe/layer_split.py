"""layer-split: path records in, the same records plus `layer` records out.

Groups the closure's store paths into layers with a strategy (strategies/)
within a layer budget: --max-layers counts every layer of the final image,
and the last one is kept for the top layer image-assemble adds, so a strategy
gets max-layers - 1 - reserve store layers.  Layer records come after all other
records, base first.
"""
import sys
from typing import IO

import typer

from . import cli
from .errors import LayerpipeError, UsageError
from .graph import closure_from_records
from .records import RecordReader, RecordWriter, paused_gc
from .strategies import DEFAULT, STRATEGIES

PROG = "layer-split"
MAX_LAYERS_DEFAULT = 100
# Docker refuses images deeper than 125 layers ("max depth exceeded").
MAX_LAYERS_LIMIT = 125


def store_budget(max_layers: int, reserve: int) -> int:
    """Store layers a strategy may use: the top layer and RESERVE are set aside."""
    if not 2 <= max_layers <= MAX_LAYERS_LIMIT:
        raise UsageError(f"--max-layers must be between 2 and {MAX_LAYERS_LIMIT}, not {max_layers}")
    if reserve < 0:
        raise UsageError(f"--reserve must not be negative, not {reserve}")
    if max_layers - 1 - reserve < 1:
        raise UsageError(f"--reserve {reserve} leaves no store layer within --max-layers {max_layers}")
    return max_layers - 1 - reserve


@paused_gc()
def layer_split(reader: RecordReader, out: IO[bytes], *, strategy: str, max_layers: int,
                reserve: int = 0, previous: list[str] = ()) -> None:
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r} (known: {', '.join(sorted(STRATEGIES))})")
    budget = store_budget(max_layers, reserve)
    if previous and strategy != "stable":
        raise UsageError("--previous is for --strategy stable")
    records = list(reader)
    paths = [r for r in records if r.type == "path"]
    if any(r.type == "layer" for r in records):
        raise LayerpipeError("input already has layer records", next(r.where for r in records if r.type == "layer"))
    if not paths:
        raise LayerpipeError("no path records in the input: nothing to layer", reader.name)
    closure = closure_from_records(paths)
    if previous:
        from .previous import read_previous  # tar and zstd readers: only when asked for

        store_dir = reader.header.extra.get("store_dir")
        before = [layer for name in previous for layer in read_previous(name, store_dir)]
        layers = STRATEGIES[strategy](closure, budget, before)
    else:
        layers = STRATEGIES[strategy](closure, budget)
    _check_partition(layers, closure.paths, strategy, budget)
    writer = RecordWriter(out)
    writer.write(reader.header.with_stage(PROG))
    for rec in records:
        writer.write(rec.data)
    for index, members in enumerate(layers):
        why = getattr(members, "why", {})
        writer.write({"type": "layer", "index": index, "paths": sorted(members), "strategy": strategy, **why})


def _check_partition(layers: list[list[str]], paths: list[str], strategy: str, budget: int) -> None:
    """A strategy bug must not become a broken image: check its promise."""
    flat = [p for layer in layers for p in layer]
    if sorted(flat) != paths or len(layers) > budget or not all(layers):
        raise RuntimeError(f"strategy {strategy} did not partition the closure into at most {budget} layers")


app = cli.make_app("Group store paths into layers.")


@app.command(epilog=cli.examples(
    "closure-read graph.refs | layer-split --strategy two-layer | layer-tar | image-assemble -o app.tar",
    "closure-read graph.refs | layer-split --max-layers 50 | jq -c 'select(.type==\"layer\") | .paths'",
))
def main(
    input: str = typer.Argument("-", metavar="INPUT", help="Path records from closure-read; '-' reads stdin."),
    strategy: str = typer.Option(DEFAULT, "--strategy", "-s", metavar="NAME", help=f"Layering strategy: {', '.join(STRATEGIES)}."),
    max_layers: int = typer.Option(MAX_LAYERS_DEFAULT, "--max-layers", metavar="N", help="Layers in the final image, top layer included (2-125)."),
    reserve: int = typer.Option(0, "--reserve", metavar="K", help="Layers left free for images built on top of this one."),
    previous: list[str] = typer.Option([], "--previous", metavar="FILE", help="An earlier build (layer records, Docker archive, OCI layout or archive) whose layers stable keeps; repeatable."),
) -> None:
    """Read path records and append layer records, base layer first (NDJSON in and out)."""
    def body():
        stream, name = cli.open_input(input)
        layer_split(RecordReader(stream, name), sys.stdout.buffer, strategy=strategy, max_layers=max_layers,
                    reserve=reserve, previous=previous)
    cli.guard(PROG, body)


def run() -> None:
    cli.run_app(app, PROG)
