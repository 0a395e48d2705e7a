"""Small stores built in a temp dir, with the shapes real stores have.

`build_store(root)` lays out a Guix-style closure under ROOT + /gnu/store:
nested directories, executables, relative and absolute symlinks (one to
another store item), a name over 100 bytes, a non-ASCII name, a hard link,
an empty file and an empty directory.  It returns a StoreFixture with the
paths, their references and the text reference graph.
"""
import os
from dataclasses import dataclass

from layerpipe.storepath import make_store_path

STORE_DIR = "/gnu/store"


@dataclass
class StoreFixture:
    root: str
    paths: dict[str, str]            # short name -> store path
    references: dict[str, list[str]]  # store path -> store paths

    def fs(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def graph_text(self) -> str:
        out = []
        for path in sorted(self.references):
            refs = self.references[path]
            out.append(f"{path}\n\n{len(refs)}\n" + "".join(f"{r}\n" for r in refs))
        return "".join(out)

    def write_graph(self, dest: str) -> str:
        with open(dest, "w") as f:
            f.write(self.graph_text())
        return dest


def _write(path: str, data: bytes, mode: int = 0o444) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def build_store(root: str, seed: str = "", order: list[str] | None = None, app_text: str = "v1") -> StoreFixture:
    """Create the store; ORDER permutes which items are created first (for
    reproducibility tests); APP_TEXT changes only the application item."""
    names = ["glibc-2.39", "libfoo-1.2", "app-" + app_text, "profile"]
    paths = {n.split("-")[0]: make_store_path(STORE_DIR, n, seed) for n in names}
    # As input addressing does: the profile refers to the app, so it changes with it.
    paths["profile"] = make_store_path(STORE_DIR, "profile", seed + app_text)
    glibc, libfoo, app, profile = (paths[k] for k in ("glibc", "libfoo", "app", "profile"))
    refs = {glibc: [glibc], libfoo: [glibc], app: [glibc, libfoo], profile: [app, libfoo]}
    fixture = StoreFixture(root, paths, refs)
    makers = {
        "glibc": lambda: _glibc(fixture.fs(glibc)),
        "libfoo": lambda: _libfoo(fixture.fs(libfoo), glibc),
        "app": lambda: _app(fixture.fs(app), libfoo, app_text),
        "profile": lambda: _profile(fixture.fs(profile), app),
    }
    for key in order or list(makers):
        makers[key]()
    return fixture


def _glibc(d: str) -> None:
    _write(f"{d}/lib/libc.so.6", bytes(range(256)) * 300, 0o555)
    os.symlink("libc.so.6", f"{d}/lib/libc.so")
    _write(f"{d}/share/locale/" + "l" * 120 + ".mo", b"long name\n")
    _write(f"{d}/share/empty", b"")
    os.makedirs(f"{d}/share/emptydir")
    os.link(f"{d}/share/empty", f"{d}/share/empty-hardlink")


def _libfoo(d: str, glibc: str) -> None:
    _write(f"{d}/lib/libfoo.so.1", b"\x7fELF libfoo " + glibc.encode() + b"\n" * 5000, 0o555)
    os.symlink(f"{glibc}/lib/libc.so.6", f"{d}/lib/libc-link")
    _write(f"{d}/share/doc/caf\u00e9.txt", "d\u00e9j\u00e0 vu\n".encode())


def _app(d: str, libfoo: str, text: str) -> None:
    _write(f"{d}/bin/app", f"#!/bin/sh\n# uses {libfoo}\necho {text}\n".encode(), 0o555)


def _profile(d: str, app: str) -> None:
    os.makedirs(f"{d}/bin")
    os.symlink(f"{app}/bin/app", f"{d}/bin/app")
    _write(f"{d}/manifest", b"(manifest (version 4) (packages ()))\n")
