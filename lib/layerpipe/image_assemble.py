"""image-assemble: tarred layer records in, an image out.

Collects the layer records (base first, by index), puts them on a base
image's layers when asked (base_image), adds a top layer for files outside
the store (extrafiles), writes the image config and manifest (imageconfig)
and the image as a Docker archive, an OCI layout tar (formats/layout) or an
OCI layout directory, new or added to (formats/oci_dir).  On stdout: the header, records it does
not know, and one `image` record describing what it wrote (nothing on stdout
when the image itself goes there with `-o -`).
"""
import contextlib
import hashlib
import os
import sys
from dataclasses import dataclass, field
from typing import IO

import typer

from . import cli, extrafiles, imageconfig as ic, storedb
from .base_image import Base, open_base
from .blobs import MEDIA_TYPES, compress_bytes, compression_of
from .epoch import source_date_epoch
from .errors import LayerpipeError, UsageError
from .formats.docker_archive import add_docker_files
from .formats.layout import Layout, write_tar
from .formats.oci_dir import write_dir
from .imagetree import ImageTree, Layer
from .profile import Profile, environment, friendly_name, read_profile
from .records import Record, RecordReader, RecordWriter, need, need_digest, need_path_list, need_size
from .storepath import name_of

PROG = "image-assemble"
FORMATS = ("docker-archive", "oci", "oci-archive")
MAX_LAYERS = 125
DOCKER_MEDIA_TYPES = {MEDIA_TYPES["gzip"], MEDIA_TYPES["none"]}


@dataclass
class Options:
    format: str = "docker-archive"
    tags: list[str] = field(default_factory=list)
    entrypoint: str | None = None
    entrypoint_args: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str | None = None
    labels: list[str] = field(default_factory=list)
    arch: str | None = None
    symlinks: list[str] = field(default_factory=list)
    base: str | None = None
    base_ref: str | None = None
    store_db: str | None = None
    root: str = "/"


def check_layer(rec: Record) -> dict:
    """A tarred layer record's descriptor fields, each checked; the blob must sit
    at blobs/sha256/<hex of its digest> inside some blob directory."""
    layer = {"index": need(rec, "index", int), "paths": need_path_list(rec, "paths", optional=True),
             "digest": need_digest(rec, "digest"), "diff_id": need_digest(rec, "diff_id"),
             "size": need_size(rec, "size"), "mediaType": need(rec, "mediaType", str),
             "blob": need(rec, "blob", str)}
    if layer["mediaType"] not in MEDIA_TYPES.values():
        raise LayerpipeError(f"unsupported layer mediaType {layer['mediaType']!r}", rec.where)
    blob = os.path.normpath(layer["blob"])
    folder, hexname = os.path.split(blob)
    parent, sha = os.path.split(folder)
    if hexname != layer["digest"].split(":")[1] or sha != "sha256" or os.path.basename(parent) != "blobs":
        raise LayerpipeError("layer 'blob' must be <blob dir>/blobs/sha256/<hex of its digest>", rec.where)
    return layer


@dataclass
class Input:
    layers: list[dict]
    roots: list[str]
    passed: list[dict]
    path_records: list[Record]


def collect(reader: RecordReader) -> Input:
    """The layers by index, root paths, path records and records to pass through."""
    layers, roots, passed, path_records = [], [], [], []
    for rec in reader:
        if rec.type == "layer":
            if "digest" not in rec.data:
                raise LayerpipeError("layer record has no digest: run layer-tar before image-assemble", rec.where)
            layers.append(check_layer(rec))
        elif rec.type == "path":
            path_records.append(rec)
            if need(rec, "root", bool, optional=True, default=False):
                roots.append(need(rec, "path", str))
        else:
            passed.append(rec.data)
    if not layers:
        raise LayerpipeError("no layer records in the input", reader.name)
    layers.sort(key=lambda layer: layer["index"])
    if [layer["index"] for layer in layers] != list(range(len(layers))):
        raise LayerpipeError("layer indexes must run 0, 1, 2, ... without gaps or repeats", reader.name)
    return Input(layers, sorted(roots), passed, path_records)


def _profile(roots: list[str]) -> str | None:
    return roots[0] if len(roots) == 1 else None


def resolve_entrypoint(opts: Options, roots: list[str], tree: ImageTree | None = None) -> list[str] | None:
    """The Entrypoint: --entrypoint (in the root profile unless absolute) and its
    arguments; with TREE, refused unless it leads to an executable file in the image."""
    if not opts.entrypoint:
        if opts.entrypoint_args:
            raise UsageError("--entrypoint-arg needs --entrypoint")
        return None
    target = opts.entrypoint
    if not target.startswith("/"):
        profile = _profile(roots)
        if profile is None:
            raise UsageError(f"--entrypoint {target}: a relative entry point needs exactly one root "
                             f"in the closure (found {len(roots)}); give an absolute path")
        target = f"{profile}/{target}"
    if tree is not None:
        found = tree.resolve(target)
        if found is None or found[1][0] != "file":
            what = "is not in the image" if found is None else "is a directory"
            raise UsageError(f"--entrypoint {opts.entrypoint}: {target} {what}")
        if not found[1][2] & 0o111:
            raise UsageError(f"--entrypoint {opts.entrypoint}: /{found[0]} is not executable")
    return [target, *opts.entrypoint_args]


def image_tree(layers: list[dict], base: Base | None, top: dict) -> ImageTree:
    """The image's files, read from the blobs only when a lookup needs them."""
    tree_layers = [Layer(lambda f=l["file"]: base.source.open(f), None, f"base layer {i}")
                   for i, l in enumerate(base.layers if base else [])]
    tree_layers += [Layer(lambda b=l["blob"]: open(b, "rb"), l["paths"], l["blob"]) for l in layers]
    return ImageTree(tree_layers, extrafiles.tree_entries(top))


def root_profile(tree: ImageTree, roots: list[str]) -> Profile | None:
    """The one root's profile manifest, if it has one; a manifest that cannot
    be read is reported and left aside."""
    if len(roots) != 1:
        return None
    try:
        return read_profile(tree, roots[0])
    except LayerpipeError as exc:
        sys.stderr.write(f"{PROG}: warning: {exc}; the profile's names and search paths are not used\n")
        return None


def default_tag(roots: list[str]) -> str:
    """The roots' names joined with '-' as guix pack joins a profile's
    (friendly_name: names dropped from the end until under 40 characters),
    a single long name cut to 40; tag latest."""
    names = [name_of(r) for r in roots] or ["layerpipe"]
    return ic.canonical_tag(friendly_name(names)[:40] + ":latest")


def _history(layers: list[dict], created: str, extra: list[tuple[str, str]]) -> list[dict]:
    history = [{"created": created, "created_by": "layerpipe layer-tar",
                "comment": "store items: " + " ".join(layer["paths"])} for layer in layers]
    return history + [{"created": created, "created_by": by, "comment": comment} for by, comment in extra]


def check_options(layers: list[dict], opts: Options) -> None:
    if opts.format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
    if opts.base_ref is not None and opts.base is None:
        raise UsageError("--base-ref needs --base")
    if opts.store_db not in (None, *storedb.SCHEMAS):
        raise UsageError(f"--store-db must be one of {', '.join(storedb.SCHEMAS)}")
    check_layers(layers, [], opts)


def check_layers(layers: list[dict], base_layers: list[dict], opts: Options) -> None:
    """The layer budget, and what a Docker archive can carry."""
    if len(base_layers) + len(layers) + 1 + bool(opts.store_db) > MAX_LAYERS:
        counts = f"{len(base_layers)} base layers, " if base_layers else ""
        db = ", the store database layer" if opts.store_db else ""
        raise LayerpipeError(f"{counts}{len(layers)} store layers{db} and the top layer exceed {MAX_LAYERS} layers")
    if opts.format == "docker-archive" and any(l["mediaType"] not in DOCKER_MEDIA_TYPES for l in base_layers + layers):
        raise UsageError("docker-archive cannot carry zstd layers; use --format oci or oci-archive")


def add_extra_layer(layout: Layout, layers: list[dict], entries: dict, epoch: int) -> dict:
    """The descriptor (with its diff_id) of a layer of ENTRIES (extrafiles),
    compressed as the store layers are."""
    media = {l["mediaType"] for l in layers}
    media_type = media.pop() if len(media) == 1 else MEDIA_TYPES["gzip"]
    tar = extrafiles.entries_tar(entries, epoch)
    blob = layout.add_blob_data(compress_bytes(tar, compression_of(media_type)))
    return {**ic.descriptor(media_type, blob.digest, blob.size),
            "diff_id": "sha256:" + hashlib.sha256(tar).hexdigest()}


def store_db_layer(layout: Layout, given: Input, opts: Options, epoch: int) -> tuple[dict, tuple[str, str]]:
    """The store database layer's descriptor and history entry."""
    members = {p for l in given.layers for p in l["paths"]}
    items = storedb.items_from(given.path_records, members, opts.root)
    entries = storedb.layer_entries(opts.store_db, items, given.roots, epoch)
    desc = add_extra_layer(layout, given.layers, entries, epoch)
    return desc, (f"layerpipe image-assemble --store-db {opts.store_db}",
                  f"store database: /{storedb.DB_FILES[opts.store_db]} ({len(items)} store items)")


def tags_and_env(opts: Options, tree: ImageTree, roots: list[str]) -> tuple[list[str], list[str]]:
    """The --tag names, else the root profile's or the roots'; the root
    profile's Env overridden by --env."""
    found = root_profile(tree, roots)
    tags = list(dict.fromkeys(ic.canonical_tag(t) for t in opts.tags)) or [
        ic.canonical_tag(friendly_name(found.names) + ":latest") if found and found.names else default_tag(roots)]
    env = ic.merge_env(environment(found, tree, roots[0]) if found else [],
                       [f"{k}={v}" for k, v in ic.split_pairs(opts.env, "--env")])
    return tags, env


def add_layers(layout: Layout, given: Input, opts: Options, base: Base | None, symlinks: list,
               epoch: int) -> tuple[list[dict], list[tuple[str, str]]]:
    """Every layer's descriptor (with diff_id), base first, and the history
    entries of the layers image-assemble makes (store database, top)."""
    base_layers = base.layers if base else []
    for l in base_layers:
        layout.add_blob_from(l["digest"], l["size"], base.source, l["file"])
    for l in given.layers:
        layout.add_blob_file(l["digest"], l["size"], l["blob"])
    descs = [{**ic.descriptor(l["mediaType"], l["digest"], l["size"]), "diff_id": l["diff_id"]}
             for l in base_layers + given.layers]
    extra = []
    if opts.store_db:
        desc, entry = store_db_layer(layout, given, opts, epoch)
        descs.append(desc)
        extra.append(entry)
    descs.append(add_extra_layer(layout, given.layers, extrafiles.top_entries(symlinks), epoch))
    extra.append(("layerpipe image-assemble",
                  "files outside the store: /tmp" + "".join(f", /{n}" for n, _ in symlinks)))
    return descs, extra


def build_layout(given: Input, opts: Options, base: Base | None = None) -> tuple[Layout, dict]:
    layers, roots = given.layers, given.roots
    check_layers(layers, base.layers if base else [], opts)
    epoch = source_date_epoch()
    created = ic.rfc3339(epoch)
    symlinks = [extrafiles.parse_symlink(s, _profile(roots)) for s in opts.symlinks]
    tree = image_tree(layers, base, extrafiles.top_entries(symlinks))
    tags, env = tags_and_env(opts, tree, roots)
    layout = Layout()
    descs, extra = add_layers(layout, given, opts, base, symlinks, epoch)
    config = ic.image_config(
        arch=ic.architecture(opts.arch), created=created, diff_ids=[d["diff_id"] for d in descs],
        history=(base.history if base else []) + _history(layers, created, extra),
        env=env, entrypoint=resolve_entrypoint(opts, roots, tree), cmd=opts.cmd, workdir=opts.workdir,
        labels=dict(ic.split_pairs(opts.labels, "--label")),
        base=base.runtime if base else None, variant=base.variant if base else None)
    config_blob = layout.add_blob_data(ic.canonical_json(config))
    config_desc = ic.descriptor(ic.CONFIG_MEDIA_TYPE, config_blob.digest, config_blob.size)
    layer_descs = [{k: v for k, v in d.items() if k != "diff_id"} for d in descs]
    manifest = ic.manifest(config_desc, layer_descs, _base_annotations(base))
    manifest_blob = layout.add_blob_data(ic.canonical_json(manifest))
    manifest_desc = ic.descriptor(ic.MANIFEST_MEDIA_TYPE, manifest_blob.digest, manifest_blob.size)
    layout.set_index(manifest_desc, tags)
    if opts.format == "docker-archive":
        add_docker_files(layout, config_blob.digest, [d["digest"] for d in descs], tags)
    image = {"type": "image", "format": opts.format, "tags": tags, "image_id": config_blob.digest,
             "config": config_desc, "manifest": manifest_desc, "layers": descs,
             "architecture": config["architecture"], **({"base": base.record} if base else {})}
    return layout, image


def _base_annotations(base: Base | None) -> dict:
    """The OCI annotations that name the base an image was built on."""
    if base is None:
        return {}
    notes = {"org.opencontainers.image.base.name": base.name} if base.name else {}
    if base.manifest:
        notes["org.opencontainers.image.base.digest"] = base.manifest["digest"]
    return notes


def image_assemble(reader: RecordReader, output: str, opts: Options, out: IO[bytes]) -> None:
    given = collect(reader)
    check_options(given.layers, opts)
    if opts.format == "oci" and output == "-":
        raise UsageError("--format oci writes a directory: give -o DIR")
    with contextlib.ExitStack() as stack:
        base = None
        if opts.base is not None:
            base = stack.enter_context(open_base(opts.base, opts.base_ref, ic.architecture(opts.arch)))
        layout, image = build_layout(given, opts, base)
        if opts.format == "oci":
            write_dir(layout, output)
        else:
            with cli.output_stream(output, "an image archive") as stream:
                write_tar(layout, stream, source_date_epoch())
    if output == "-":
        return
    writer = RecordWriter(out)
    writer.write(reader.header.with_stage(PROG))
    for data in given.passed:
        writer.write(data)
    writer.write({**image, "output": os.path.abspath(output)})


app = cli.make_app("Assemble tarred layers into an image: Docker archive, OCI layout or OCI archive.")


@app.command(epilog=cli.examples(
    "... | layer-tar | image-assemble --tag guile:3.0 --entrypoint bin/guile -o guile.tar",
    "... | layer-tar | image-assemble --symlink /bin=bin -o - | docker load",
    "... | layer-tar --compress zstd | image-assemble --format oci --tag app:1 -o ./images",
    "... | layer-tar | image-assemble --base debian.tar --entrypoint bin/app -o app.tar",
    "... | layer-tar | image-assemble --store-db nix --entrypoint bin/hello -o hello.tar",
))
def main(
    input: str = typer.Argument("-", metavar="INPUT", help="Records from layer-tar; '-' reads stdin."),
    output: str = typer.Option("-", "--output", "-o", metavar="PATH", help="Image file or directory; '-' streams an archive to stdout."),
    format: str = typer.Option("docker-archive", "--format", "-f", metavar="FORMAT", help="docker-archive (also an OCI layout tar), oci (a directory) or oci-archive."),
    tag: list[str] = typer.Option([], "--tag", "-t", metavar="NAME[:TAG]", help="NAME[:TAG], repeatable (default: the root profile's package names, else the roots' names; :latest)."),
    entrypoint: str = typer.Option(None, "--entrypoint", metavar="PATH", help="Program to run; relative to the root profile unless absolute."),
    entrypoint_arg: list[str] = typer.Option([], "--entrypoint-arg", "-A", metavar="ARG", help="Argument appended to the entry point, repeatable."),
    cmd: list[str] = typer.Option([], "--cmd", metavar="ARG", help="Default arguments (Cmd), one per use, repeatable."),
    env: list[str] = typer.Option([], "--env", "-e", metavar="KEY=VALUE", help="KEY=VALUE in the environment, repeatable; replaces what the root profile sets."),
    workdir: str = typer.Option(None, "--workdir", "-w", metavar="DIR", help="Working directory of the container."),
    label: list[str] = typer.Option([], "--label", "-l", metavar="KEY=VALUE", help="KEY=VALUE label, repeatable."),
    arch: str = typer.Option(None, "--arch", metavar="ARCH", help="Architecture: amd64, arm64, ... or a system such as x86_64-linux (default: this machine's)."),
    symlink: list[str] = typer.Option([], "--symlink", "-S", metavar="/SOURCE=TARGET", help="/SOURCE=TARGET link in the top layer; a relative TARGET is in the root profile."),
    base: str = typer.Option(None, "--base", "-b", metavar="IMAGE", help="Build on this image (Docker archive, OCI layout directory or tar): its layers first, its config inherited."),
    base_ref: str = typer.Option(None, "--base-ref", metavar="NAME", help="Which image of --base, by name, when it holds several."),
    store_db: str = typer.Option(None, "--store-db", metavar="guix|nix", help="Add a layer with the store database registering every store item (Guix's /var/guix/db or Nix's /nix/var/nix/db)."),
    root: str = typer.Option("/", "--root", metavar="DIR", help="Directory the store lives under, to compute the narHash a path record lacks (--store-db)."),
) -> None:
    """Write the image from layer records (NDJSON on stdin) and print an image record.

    The image holds the layers of --base (unchanged, after checking them),
    the store layers, base first, and a top layer with /tmp (mode 1777) and
    the --symlink links.  Its creation time is SOURCE_DATE_EPOCH (default 1).
    Outputs appear atomically; --format oci adds to an existing layout.
    """
    opts = Options(format=format, tags=tag, entrypoint=entrypoint, entrypoint_args=entrypoint_arg,
                   cmd=cmd, env=env, workdir=workdir, labels=label, arch=arch, symlinks=symlink,
                   base=base, base_ref=base_ref, store_db=store_db, root=root)

    def body():
        stream, name = cli.open_input(input)
        image_assemble(RecordReader(stream, name), output, opts, sys.stdout.buffer)
    cli.guard(PROG, body)


def run() -> None:
    cli.run_app(app, PROG)
