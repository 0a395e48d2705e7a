#!/usr/bin/env python3
"""Make a small store with a real program and its reference graph, for the demo.

    make-demo-store.py ROOT STORE_DIR GRAPH

Under ROOT it creates four store items as Guix would lay them out: busybox
(the static binary from Debian's busybox-static), a greeting text, a `hello`
item with a script that uses both, and a profile whose `bin/` links to it.  GRAPH gets the references graph in the text format of
Guix's #:references-graphs.
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "lib"))
from layerpipe.storepath import make_store_path  # noqa: E402

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def make(root: str, store_dir: str, graph: str) -> dict[str, str]:
    """Create the store and GRAPH; returns the store paths by short name."""
    busybox = make_store_path(store_dir, "busybox-1.35.0", "demo")
    greeting = make_store_path(store_dir, "greeting-1.0", "demo")
    hello = make_store_path(store_dir, "hello-layerpipe-1.0", "demo")
    profile = make_store_path(store_dir, "profile", "demo")

    def fs(path: str, *rest: str) -> str:
        return os.path.join(root, path.lstrip("/"), *rest)

    os.makedirs(fs(busybox, "bin"))
    shutil.copyfile(BUSYBOX, fs(busybox, "bin", "busybox"))
    os.chmod(fs(busybox, "bin", "busybox"), 0o555)
    for applet in ("sh", "cat", "ls", "wc", "echo"):
        os.symlink("busybox", fs(busybox, "bin", applet))
    os.makedirs(fs(greeting, "share"))
    with open(fs(greeting, "share", "greeting.txt"), "w") as f:
        f.write("Hello from a layerpipe image!\n")
    os.makedirs(fs(hello, "bin"))
    with open(fs(hello, "bin", "hello"), "w") as f:
        f.write(f"#!{busybox}/bin/sh\n{busybox}/bin/cat {greeting}/share/greeting.txt\n"
                f"echo \"$({busybox}/bin/ls {store_dir} | {busybox}/bin/wc -l) store items in this image\"\n")
    os.chmod(fs(hello, "bin", "hello"), 0o555)
    os.makedirs(fs(profile, "bin"))
    os.symlink(f"{hello}/bin/hello", fs(profile, "bin", "hello"))
    refs = {busybox: [], greeting: [], hello: [busybox, greeting], profile: [hello]}
    with open(graph, "w") as f:
        for path in sorted(refs):
            f.write(f"{path}\n\n{len(refs[path])}\n" + "".join(r + "\n" for r in refs[path]))
    return {"busybox": busybox, "greeting": greeting, "hello": hello, "profile": profile}

if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    make(*sys.argv[1:])
