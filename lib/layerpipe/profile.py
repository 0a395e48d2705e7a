"""What the root profile tells about the image: its default name and its Env.

A Guix profile has a `manifest` file, an s-expression (guix/profiles.scm):

    (manifest (version 4)
      (packages (("guile" "3.0.9" "out" "/gnu/store/...-guile-3.0.9"
                  (propagated-inputs (...entries...))
                  (search-paths (("GUILE_LOAD_PATH" ("share/guile/site/3.0") ":" directory #f)))
                  (properties)) ...)))

Versions 2 to 4 list search paths; 0 and 1 only names.  As `guix pack -f
docker` does: the name is the entries' names joined with '-', entries dropped
from the end while it is 40 characters or longer (manifest->friendly-name);
the Env is the manifest's search paths ($PATH first, then those of every
entry and its propagated inputs, each once) evaluated against the profile
(guix/search-paths.scm): each of a spec's files, taken in the profile, that
exists with the spec's file type, or with a file pattern, the files of that
type below them whose name matches it; joined with the separator, or the
first one alone when the separator is #f; a spec with no match is left out.

A Nix profile (buildEnv, nix-env or nix profile) records no search paths:
from `manifest.json` (nix profile) or `manifest.nix` (nix-env) only the
package names are read, for the default name; the Env is PATH=<profile>/bin
when the profile has a bin directory, as Nix sets it for a profile.
"""
import json
import posixpath
import re
from dataclasses import dataclass, field

from . import sexp
from .errors import LayerpipeError
from .imagetree import DIR, ImageTree
from .storepath import name_of

# guix/search-paths.scm: $PATH, which every manifest gets.
PATH_SPEC = ("PATH", ("bin", "sbin"), ":", "directory", None)
FILE_TYPES = {"directory": "dir", "regular": "file"}
MAX_FILES = 100_000


@dataclass
class Profile:
    kind: str  # guix or nix
    names: list[str]
    search_paths: list[tuple] = field(default_factory=list)  # (variable, files, separator, type, pattern)


def read_profile(tree: ImageTree, path: str) -> Profile | None:
    """The profile at PATH in the image, or None when it has no manifest."""
    data = tree.read_file(path + "/manifest")
    if data is not None and _GUIX_START.match(data):  # another program's file named manifest: not a profile
        return guix_manifest(data.decode("utf-8", "replace"), path + "/manifest")
    data = tree.read_file(path + "/manifest.json")
    if data is not None:
        return nix_manifest_json(data, path + "/manifest.json")
    data = tree.read_file(path + "/manifest.nix")
    if data is not None:
        return Profile("nix", nix_manifest_names(data.decode("utf-8", "replace")), [_NIX_PATH])
    return None


_NIX_PATH = ("PATH", ("bin",), ":", "directory", None)
_GUIX_START = re.compile(rb"(\s|;[^\n]*\n)*\(\s*manifest[\s)]")


def _fail(where: str, what: str):
    raise LayerpipeError(f"not a Guix manifest: {what}", where)


def guix_manifest(text: str, where: str) -> Profile:
    data = sexp.read(text, where)
    if not (isinstance(data, list) and data[:1] == ["manifest"] and len(data) >= 3):
        _fail(where, "expected (manifest (version N) (packages ...))")
    fields = {f[0]: f[1:] for f in data[1:] if isinstance(f, list) and f and isinstance(f[0], sexp.Symbol)}
    version = (fields.get("version") or [None])[0]
    if not isinstance(version, int) or not 0 <= version <= 4:
        _fail(where, f"unsupported version {version!r}")
    packages = (fields.get("packages") or [None])[0]
    if not isinstance(packages, list):
        _fail(where, "no (packages ...)")
    entries = [_entry(e, where) for e in packages]
    specs = [PATH_SPEC]
    if version >= 2:
        for entry in entries:
            for spec in _transitive_specs(entry, where, version):
                if spec not in specs:
                    specs.append(spec)
    return Profile("guix", [e[0] for e in entries], specs)


def _entry(entry, where: str) -> list:
    if not (isinstance(entry, list) and len(entry) >= 4 and all(isinstance(x, str) for x in entry[:4])):
        _fail(where, "a package entry is not (NAME VERSION OUTPUT PATH ...)")
    return entry


def _transitive_specs(entry: list, where: str, version: int, depth: int = 0) -> list[tuple]:
    parts = {p[0]: p[1:] for p in entry[4:] if isinstance(p, list) and p and isinstance(p[0], sexp.Symbol)}
    specs = [_spec(s, where) for s in _list_part(parts, "search-paths", where)]
    if version >= 3 and depth < 100:  # propagated inputs are entries themselves
        for dep in _list_part(parts, "propagated-inputs", where):
            specs += _transitive_specs(_entry(dep, where), where, version, depth + 1)
    return specs


def _list_part(parts: dict, key: str, where: str) -> list:
    value = (parts.get(key) or [[]])[0]
    if not isinstance(value, list):
        _fail(where, f"({key} ...) does not hold a list")
    return value


def _spec(spec, where: str) -> tuple:
    ok = (isinstance(spec, list) and len(spec) == 5 and isinstance(spec[0], str)
          and isinstance(spec[1], list) and all(isinstance(f, str) for f in spec[1])
          and (spec[2] is False or isinstance(spec[2], str)) and isinstance(spec[3], sexp.Symbol)
          and (spec[4] is False or isinstance(spec[4], str)))
    if not ok:
        _fail(where, f"bad search path {spec!r:.80}")
    return (str(spec[0]), tuple(spec[1]), spec[2] or None, str(spec[3]), spec[4] or None)


def nix_manifest_json(data: bytes, where: str) -> Profile:
    """`nix profile`'s manifest: version 1-2 list elements, 3 names them."""
    try:
        manifest = json.loads(data)
        elements = manifest["elements"]
    except (ValueError, KeyError, TypeError):
        raise LayerpipeError("not a Nix profile manifest.json (no elements)", where) from None
    if isinstance(elements, dict):
        return Profile("nix", list(elements), [_NIX_PATH])
    names = []
    for e in elements if isinstance(elements, list) else []:
        attr = e.get("attrPath") if isinstance(e, dict) else None
        paths = e.get("storePaths") if isinstance(e, dict) else None
        if isinstance(attr, str) and attr:
            names.append(attr.rsplit(".", 1)[-1])
        elif isinstance(paths, list) and paths and isinstance(paths[0], str):
            names.append(drv_name(name_of(paths[0])))
    return Profile("nix", names, [_NIX_PATH])


_NIX_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\];=]|[^\s{}\[\];="]+', re.S)


def nix_manifest_names(text: str) -> list[str]:
    """The `pname` (else `name`) of each element of nix-env's manifest.nix, a
    list of attribute sets: read by a token scan, never evaluated."""
    names, depth, current = [], 0, {}
    tokens = _NIX_TOKEN.findall(text)
    for i, tok in enumerate(tokens):
        if tok in "{[":
            depth += 1
        elif tok in "}]":
            depth -= 1
            if tok == "}" and depth == 1:
                if current.get("pname") or current.get("name"):
                    names.append(current.get("pname") or drv_name(current["name"]))
                current = {}
        elif depth == 2 and tok in ("name", "pname") and tokens[i + 1:i + 2] == ["="] \
                and tokens[i + 2:i + 3] and tokens[i + 2].startswith('"'):
            current[tok] = tokens[i + 2][1:-1]
    return names


def drv_name(name: str) -> str:
    """NAME without its version, as builtins.parseDrvName splits it: at the
    first '-' not followed by a letter."""
    match = re.search(r"-(?![A-Za-z])", name)
    return name[:match.start()] if match else name


def friendly_name(names: list[str]) -> str:
    """guix pack's manifest->friendly-name: shorter than 40, or one name."""
    while len(names) > 1 and len("-".join(names)) >= 40:
        names = names[:-1]
    return "-".join(names)


def environment(profile: Profile, tree: ImageTree, path: str) -> list[str]:
    """KEY=VALUE for each search path that has a match in the profile at PATH."""
    env = []
    for variable, files, separator, file_type, pattern in profile.search_paths:
        kind = FILE_TYPES.get(file_type)
        if kind is None:
            continue  # symlink and other types: nothing a layer tar records as such
        found = []
        for f in files:
            name = posixpath.normpath(f"{path}/{f}")
            found += _matches(tree, name, kind, pattern) if pattern else _exists(tree, name, kind)
        if found:
            env.append(f"{variable}={separator.join(found) if separator else found[0]}")
    return env


def _exists(tree: ImageTree, name: str, kind: str) -> list[str]:
    hit = tree.resolve(name)
    return [name] if hit is not None and hit[1][0] == kind else []


def _matches(tree: ImageTree, top: str, kind: str, pattern: str) -> list[str]:
    """Files of KIND below TOP (links followed) whose name matches PATTERN, depth first, sorted."""
    try:
        regex = re.compile(pattern)
    except re.error:
        return []
    out, todo, seen = [], [top], 0
    while todo:
        name = todo.pop()
        seen += 1
        hit = tree.resolve(name)
        if hit is None or seen > MAX_FILES:
            continue
        if hit[1][0] == kind and name != top and regex.search(posixpath.basename(name)):
            out.append(name)
        if hit[1][0] == DIR:
            todo.extend(f"{name}/{child}" for child in sorted(tree.children(hit[0]), reverse=True))
    return out
