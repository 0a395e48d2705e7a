"""A hand-made Guix profile: store items, and a profile whose `manifest` is
written in the format `guix package` writes (guix/profiles.scm, manifest
version 4: entries of name, version, output, item, propagated-inputs,
search-paths and properties), since Guix itself is not available here.

    guile-3.0.9 (propagates libgc) hello-2.12.1 nss-certs-3.99
    docbook-xml-4.5 python-a-rather-long-name-1.0 -> profile

The profile is a union of links as Guix builds one: real directories where
several packages meet (bin/), a link to the package's directory otherwise.
"""
import os

from .store import StoreFixture, _write
from layerpipe.storepath import make_store_path

STORE_DIR = "/gnu/store"
NAMES = ["glibc-2.39", "libgc-8.2.4", "guile-3.0.9", "hello-2.12.1", "nss-certs-3.99",
         "docbook-xml-4.5", "python-a-rather-long-name-1.0", "profile"]

GUILE_PATHS = '''(("GUILE_LOAD_PATH"
           ("share/guile/site/3.0")
           ":"
           directory
           #f)
          ("GUILE_LOAD_COMPILED_PATH"
           ("lib/guile/3.0/site-ccache" "share/guile/site/3.0")
           ":"
           directory
           #f)
          ("GUILE_EXTENSIONS_PATH"
           ("lib/guile/3.0/extensions")
           ":"
           directory
           #f))'''

CERT_PATHS = '''(("SSL_CERT_DIR"
           ("etc/ssl/certs")
           #f
           directory
           #f)
          ("SSL_CERT_FILE"
           ("etc/ssl/certs/ca-certificates.crt")
           #f
           regular
           #f))'''

XML_PATHS = '''(("XML_CATALOG_FILES"
           ("xml")
           " "
           regular
           "^catalog\\\\.xml$"))'''


def _entry(name: str, version: str, item: str, search_paths: str = "()", deps: str = "()") -> str:
    return f'''    ("{name}"
      "{version}"
      "out"
      "{item}"
      (propagated-inputs
        {deps})
      (search-paths
        {search_paths})
      (properties))'''


def manifest_text(p: dict) -> str:
    libgc = _entry("libgc", "8.2.4", p["libgc"]).replace("\n", "\n     ")
    entries = [
        _entry("guile", "3.0.9", p["guile"], GUILE_PATHS, f"({libgc.strip()})"),
        _entry("hello", "2.12.1", p["hello"]),
        _entry("nss-certs", "3.99", p["nss-certs"], CERT_PATHS),
        _entry("docbook-xml", "4.5", p["docbook-xml"], XML_PATHS),
        _entry("python-a-rather-long-name", "1.0", p["python-a-rather-long-name"]),
    ]
    return (";; This file was automatically generated and is for internal use only.\n"
            ";; It cannot be passed to the '--manifest' option.\n\n"
            "(manifest\n  (version 4)\n  (packages\n   (" + "\n".join(e.strip() if i == 0 else e
                                                          for i, e in enumerate(entries)) + ")))\n")


def build_guix_profile(root: str) -> StoreFixture:
    paths = {n.rsplit("-", 1)[0] if n != "profile" else n: make_store_path(STORE_DIR, n) for n in NAMES}
    fs = lambda p, sub="": os.path.join(root, p.lstrip("/"), sub)  # noqa: E731
    _write(fs(paths["glibc"], "lib/libc.so.6"), b"\x7fELF libc", 0o555)
    _write(fs(paths["libgc"], "lib/libgc.so.1"), b"\x7fELF gc " + paths["glibc"].encode(), 0o555)
    _write(fs(paths["guile"], "bin/guile"), b"\x7fELF guile " + paths["libgc"].encode(), 0o555)
    _write(fs(paths["guile"], "share/guile/site/3.0/ice-9/x.scm"), b"(define x 1)\n")
    _write(fs(paths["guile"], "lib/guile/3.0/site-ccache/ice-9/x.go"), b"GOOF")
    _write(fs(paths["hello"], "bin/hello"), b"#!" + paths["glibc"].encode() + b"/lib/libc.so.6\n", 0o555)
    _write(fs(paths["nss-certs"], "etc/ssl/certs/ca-certificates.crt"), b"-----BEGIN CERTIFICATE-----\n")
    _write(fs(paths["docbook-xml"], "xml/dtd/docbook/catalog.xml"), b"<catalog/>\n")
    _write(fs(paths["docbook-xml"], "xml/dtd/docbook/not-a-catalog.xml"), b"<x/>\n")
    _write(fs(paths["python-a-rather-long-name"], "lib/python3/site.py"), b"")
    profile = paths["profile"]
    os.makedirs(fs(profile, "bin"))
    for tool in ("guile", "hello"):
        os.symlink(f"{paths[tool]}/bin/{tool}", fs(profile, f"bin/{tool}"))
    os.makedirs(fs(profile, "share/guile/site"))
    os.symlink(f"{paths['guile']}/share/guile/site/3.0", fs(profile, "share/guile/site/3.0"))
    os.makedirs(fs(profile, "lib"))
    os.symlink(f"{paths['guile']}/lib/guile", fs(profile, "lib/guile"))
    os.symlink(f"{paths['nss-certs']}/etc", fs(profile, "etc"))
    os.symlink(f"{paths['docbook-xml']}/xml", fs(profile, "xml"))
    _write(fs(profile, "manifest"), manifest_text(paths).encode())
    refs = {paths["glibc"]: [], paths["libgc"]: [paths["glibc"]], paths["guile"]: [paths["libgc"]],
            paths["hello"]: [paths["glibc"]], paths["nss-certs"]: [], paths["docbook-xml"]: [],
            paths["python-a-rather-long-name"]: [],
            profile: sorted(paths[k] for k in paths if k not in ("profile", "glibc"))}
    return StoreFixture(root, paths, refs)
