"""The man pages: one per command, in step with its --help, rendered from
its scdoc source, and a records page that names every field the commands
write.  Each failure says which page, option or field is out of step."""
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, REPO, run_stage
from layerpipe import cli
from layerpipe.storepath import make_store_path

MAN = REPO / "man"
COMMANDS = ["closure-read", "layer-split", "layer-tar", "image-assemble"]
RECORDS_PAGE = MAN / "layerpipe-records.7"
COMMAND_SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "INPUT", "OUTPUT",
                    "ENVIRONMENT", "EXIT STATUS", "EXAMPLES", "SEE ALSO"]
# Where layerpipe-records.7 documents each record type's fields.
RECORD_SECTIONS = {"header": "HEADER", "path": "PATH RECORDS", "layer": "LAYER RECORDS",
                   "image": "IMAGE RECORD"}
OPTION_RE = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


# -- reading --help ----------------------------------------------------------

def help_text(command: str) -> str:
    env = {**os.environ, "TYPER_USE_RICH": "0", "COLUMNS": "80"}
    proc = subprocess.run([str(BIN / command), "--help"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, f"{command} --help exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def help_options(command: str) -> dict[tuple[str, ...], str]:
    """The Options section of --help: option names -> their description, joined."""
    match = re.search(r"^Options:\n(.*?)(?:\n\s*\n|\Z)", help_text(command), re.M | re.S)
    assert match, f"{command} --help has no 'Options:' section"
    entries: dict[tuple[str, ...], list[str]] = {}
    names: tuple[str, ...] = ()
    for line in match.group(1).splitlines():
        first = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if first:
            names = tuple(OPTION_RE.findall(first.group(1)))
            entries[names] = [first.group(2) or ""]
        elif names:
            entries[names].append(line.strip())
    return {k: _join_wrapped(v) for k, v in entries.items()}


def _join_wrapped(lines: list[str]) -> str:
    # click breaks lines after a hyphen ("two-" / "layer]"): join those without a space.
    text = ""
    for line in lines:
        text += line if text.endswith("-") or not text else " " + line
    return text


# -- reading rendered man pages ------------------------------------------------

def plain(roff: str) -> str:
    text = re.sub(r"\\f[BIRP]", "", roff)
    for escape, char in (("\\&", ""), ("\\-", "-"), ("\\(aq", "'"), ("\\*(Aq", "'"), ("\\\\", "\\")):
        text = text.replace(escape, char)
    return text


def man_sections(page: Path) -> dict[str, list[str]]:
    """The roff lines of each .SH section of PAGE."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith(".SH "):
            current = line[4:].strip().strip('"')
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def definitions(lines: list[str]) -> list[tuple[str, str]]:
    """(term line, body text) of each indented definition: a text line followed by .RS."""
    found = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith(".") or not lines[i + 1].startswith(".RS"):
            continue
        depth, body = 0, []
        for nxt in lines[i + 1:]:
            if nxt.startswith(".RS"):
                depth += 1
            elif nxt.startswith(".RE"):
                depth -= 1
                if depth == 0:
                    break
            elif not nxt.startswith("."):
                body.append(nxt)
        found.append((line, " ".join(body)))
    return found


def man_page(command: str) -> Path:
    page = MAN / f"{command}.1"
    assert page.is_file(), f"{command} has no man page: man/{command}.1 is missing (run man/render.sh)"
    return page


def man_options(command: str) -> dict[tuple[str, ...], str]:
    sections = man_sections(man_page(command))
    assert "OPTIONS" in sections, f"man/{command}.1 has no OPTIONS section"
    return {tuple(OPTION_RE.findall(plain(term))): plain(body)
            for term, body in definitions(sections["OPTIONS"]) if OPTION_RE.match(plain(term))}


# -- every command has a page, in step with --help -------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_man_page_with_sections(command):
    sections = man_sections(man_page(command))
    missing = [s for s in COMMAND_SECTIONS if s not in sections]
    assert not missing, f"man/{command}.1 lacks the sections {missing}"
    exits = {plain(term).strip() for term, _ in definitions(sections["EXIT STATUS"])}
    wanted = {str(s) for s in (0, cli.EXIT_ERROR, cli.EXIT_USAGE, cli.EXIT_SIGINT, cli.EXIT_PIPE,
                               cli.EXIT_SIGTERM)}
    assert wanted <= exits, f"man/{command}.1 EXIT STATUS does not list {sorted(wanted - exits)}"
    environment = plain("\n".join(sections["ENVIRONMENT"]))
    for variable in ("LAYERPIPE_DEBUG", "SOURCE_DATE_EPOCH"):
        assert variable in environment, f"man/{command}.1 ENVIRONMENT does not mention {variable}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_option_is_in_man_page(command):
    text = plain(man_page(command).read_text(encoding="utf-8"))
    documented = {name for names in man_options(command) for name in names}
    for names in help_options(command):
        for name in names:
            if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
                pytest.fail(f"{command} --help shows {name}, but man/{command}.1 never mentions it")
            if name not in documented:
                pytest.fail(f"{command} --help shows {name}, but the OPTIONS section of "
                            f"man/{command}.1 does not document it")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_man_option_is_in_help(command):
    shown = {name for names in help_options(command) for name in names}
    for names in man_options(command):
        for name in names:
            assert name in shown, \
                f"man/{command}.1 documents {name} in OPTIONS, but {command} --help has no such option"


@pytest.mark.parametrize("command", COMMANDS)
def test_man_options_state_the_defaults_help_shows(command):
    documented = man_options(command)
    for names, description in help_options(command).items():
        entry = next((body for terms, body in documented.items() if set(names) & set(terms)), None)
        if entry is None:
            continue  # reported by test_every_help_option_is_in_man_page
        if "--help" not in names:
            assert re.search(r"\bdefault\b", entry, re.I), \
                f"man/{command}.1 does not give the default of {'/'.join(names)}"
        default = re.search(r"\[default: (.*?)\]", description)
        if default:
            assert f"Default: {default.group(1)}" in entry, \
                (f"{command} --help gives {'/'.join(names)} the default {default.group(1)!r}, "
                 f"but man/{command}.1 says: {entry!r}")


# -- the shipped pages are rendered from their sources ---------------------------

def _without_generator(page: Path) -> str:
    # The first comment names the scdoc version; another version is no reason to re-render.
    return "".join(line for line in page.read_text(encoding="utf-8").splitlines(keepends=True)
                   if not line.startswith('.\\" Generated by scdoc'))


def test_rendered_pages_are_up_to_date(tmp_path):
    if shutil.which("scdoc") is None:
        if os.environ.get("CI"):
            pytest.fail("scdoc is not installed, so the man pages cannot be checked against their sources")
        pytest.skip("scdoc is not installed")
    sources = sorted(MAN.glob("*.scd"))
    assert sources, "man/ has no .scd sources"
    proc = subprocess.run(["sh", str(MAN / "render.sh"), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"man/render.sh failed: {proc.stderr}"
    for source in sources:
        page = source.name.removesuffix(".scd")
        shipped = MAN / page
        assert shipped.is_file(), f"man/{page} is missing: run man/render.sh"
        if _without_generator(tmp_path / page) != _without_generator(shipped):
            pytest.fail(f"man/{page} does not match man/{source.name}: run man/render.sh")
    stray = sorted(p.name for p in MAN.iterdir()
                   if re.fullmatch(r".+\.[1-8]", p.name) and not (MAN / f"{p.name}.scd").is_file())
    assert not stray, f"man pages without an .scd source: {stray}"


# -- the records page names every field the commands write -------------------------

def _json_closure(store) -> bytes:
    """The store's closure as `nix path-info --json` would print it, with an SRI
    narHash and a deriver, so closure-read writes every optional field."""
    entries = []
    for path, refs in sorted(store.references.items()):
        digest = base64.b64encode(hashlib.sha256(path.encode()).digest()).decode()
        entries.append({"path": path, "references": refs, "narHash": f"sha256-{digest}",
                        "deriver": make_store_path("/gnu/store", "x.drv", path)})
    return json.dumps(entries).encode()


def _records(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def pipeline_records(store, tmp_path) -> list[dict]:
    """Every record each stage writes, from a text graph and from Nix JSON;
    layer-split also with a strategy that names primaries, and with stable
    keeping the layers of the first build (kept_from); image-assemble also
    on a base image (base)."""
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    root, blobs = ["--root", store.root], ["--blob-dir", str(tmp_path / "blobs")]
    from_text = run_stage("closure-read", *root, graph)
    read = run_stage("closure-read", *root, input=_json_closure(store))
    split = run_stage("layer-split", input=read.stdout)
    tarred = run_stage("layer-tar", *root, *blobs, input=split.stdout)
    image = run_stage("image-assemble", "-o", str(tmp_path / "app.tar"), "--tag", "app:1",
                      "--entrypoint", "bin/app", "--symlink", "/bin=bin", input=tarred.stdout)
    previous = tmp_path / "previous.ndjson"
    previous.write_bytes(tarred.stdout)
    splits = [run_stage("layer-split", "-s", name, input=read.stdout) for name in ("size", "popularity", "auto")]
    kept = run_stage("layer-split", "-s", "stable", "--previous", str(previous), input=read.stdout)
    kept_image = run_stage("layer-split", "-s", "stable", "--previous", str(tmp_path / "app.tar"),
                           input=read.stdout)
    based = run_stage("image-assemble", "-o", str(tmp_path / "based.tar"), "--base", str(tmp_path / "app.tar"),
                      "--tag", "based:1", input=tarred.stdout)
    stages = (from_text, read, split, tarred, image, *splits, kept, kept_image, based)
    return [r for proc in stages for r in _records(proc)]


def _fields(section: list[str]) -> dict[str, str]:
    """Field name -> body of its definition (the first bold word of each term)."""
    fields = {}
    for term, body in definitions(section):
        name = re.match(r"\\fB(.+?)\\fR", term)
        if name:
            fields.setdefault(plain(name.group(1)), body)
    return fields


def test_records_page_documents_every_field(store, tmp_path):
    assert RECORDS_PAGE.is_file(), "man/layerpipe-records.7 is missing (run man/render.sh)"
    sections = man_sections(RECORDS_PAGE)
    records = pipeline_records(store, tmp_path)
    seen_types = {r["type"] for r in records}
    assert set(RECORD_SECTIONS) <= seen_types, f"the pipeline wrote no {set(RECORD_SECTIONS) - seen_types} record"
    # The runs must reach the optional layer fields, or their check below would pass unseen.
    layer_keys = {k for r in records if r["type"] == "layer" for k in r}
    unseen = {"reason", "primary", "kept_from"} - layer_keys
    assert not unseen, f"no layer-split run wrote the layer fields {sorted(unseen)}: the check cannot see them"
    missing = []
    for rec in records:
        section = RECORD_SECTIONS.get(rec["type"])
        if section is None:
            missing.append(f"record type {rec['type']!r} (no section for it)")
            continue
        assert section in sections, f"man/layerpipe-records.7 has no section {section}"
        fields = _fields(sections[section])
        for key, value in rec.items():
            if key not in fields:
                missing.append(f"{rec['type']}.{key} (not a field of {section})")
                continue
            nested = value if isinstance(value, list) else [value]
            for sub in {k for item in nested if isinstance(item, dict) for k in item}:
                if not re.search(rf"\\fB{re.escape(sub)}\\fR", fields[key]):
                    missing.append(f"{rec['type']}.{key}.{sub} (not named under {key} in {section})")
    if missing:
        pytest.fail("man/layerpipe-records.7 does not document: " + ", ".join(sorted(set(missing))))
