"""The bytes of generated store items: what gen_store.py writes for each package.

Each item is cut from two corpora made once per seed, machine-code-like bytes
(gzip -6: about 0.4) and text (about 0.35), with incompressible segments (the
compressed assets real packages carry) mixed in at the package's proportions.
An item's bytes depend on its name and version, so they stay the same when
only a dependency changes, plus the store paths it embeds (its own and its
references', as RUNPATH strings and pkg-config files do): a rebuilt item
differs from the old one in those few bytes.
"""
import os
import random
import shutil

MB, KB = 1 << 20, 1 << 10


class Corpora:
    """Source bytes that items are cut from: machine-code-like and text-like."""

    SIZE = 4 * MB

    def __init__(self, seed: str):
        rng = random.Random(f"{seed}:corpus")
        tokens = [rng.randbytes(rng.choice((1, 2, 2, 3, 4, 4, 5, 6, 8, 12))) for _ in range(2000)]
        tokens[:2] = [bytes(16), bytes(4)]  # padding and zero immediates
        weights = [1 / (i + 1) ** 0.95 for i in range(len(tokens))]
        self.code = b"".join(rng.choices(tokens, weights, k=self.SIZE // 3))[:self.SIZE]
        words = ["".join(rng.choice("etaoinshrdlcumwfgypbvkjxqz_") for _ in range(rng.randint(2, 11)))
                 for _ in range(6000)]
        weights = [1 / (i + 1) for i in range(len(words))]
        seps = [" "] * 12 + ["\n", ", ", ". ", "(", ");\n", " = ", "\n    "]
        parts = rng.choices(words, weights, k=self.SIZE // 5)
        glue = rng.choices(seps, k=len(parts))
        self.text = "".join(w + s for w, s in zip(parts, glue)).encode()[:self.SIZE]

    def fill(self, rng: random.Random, size: int, mix: tuple) -> bytes:
        """SIZE bytes of segments drawn by MIX (code, text, incompressible)."""
        out, left = [], size
        while left > 0:
            seg = min(left, rng.randint(4 * KB, 64 * KB))
            kind = rng.random()
            if kind < mix[2]:
                out.append(rng.randbytes(seg))
            else:
                source = self.text if kind < mix[2] + mix[1] else self.code
                at = rng.randrange(len(source) - seg)
                out.append(source[at:at + seg])
            left -= seg
        return b"".join(out)


def _embed(data: bytes, text: bytes) -> bytes:
    """DATA with TEXT written over it near the start, as a RUNPATH string sits in an ELF file."""
    at = min(len(data) // 4, 4096)
    if len(data) < at + len(text) + 2:
        return data + b"\0" + text
    return data[:at] + b"\0" + text + b"\0" + data[at + len(text) + 2:]


def item_files(pkg, path: str, deps: list[str], seed: str, corpora: Corpora) -> list[tuple]:
    """The files of PKG's store item: (relative name, bytes or None, mode, link target or None)."""
    rng = random.Random(f"{seed}:{pkg.name}:v{pkg.version}")
    base = pkg.name.rsplit("-", 1)[0]
    paths_text = f"prefix={path}\n" + "".join(f"Requires: {d}\n" for d in deps)
    if pkg.kind == "profile":
        files = [("manifest", ("(manifest (version 4) (packages (\n" + "".join(f'  ("{d}")\n' for d in deps)
                               + ")))\n").encode().ljust(pkg.size // 2, b" "), 0o444, None)]
        files += [(f"bin/{d.split('-', 1)[1].rsplit('-', 1)[0]}", None, 0, f"{d}/bin") for d in deps]
        return files
    count = max(2, min(80, round(pkg.size / (160 * KB))))
    main = int(pkg.size * rng.uniform(0.35, 0.6)) if count > 2 else pkg.size * 3 // 4
    shares = [rng.random() + 0.1 for _ in range(count - 1)]
    sizes = [main] + [int((pkg.size - main) * s / sum(shares)) for s in shares]
    runpath = ":".join(d + "/lib" for d in deps).encode()
    if pkg.kind == "app":
        main_name, mode = f"bin/{base}", 0o555
    elif pkg.kind == "data":
        main_name, mode = f"share/{base}/{base}.dat", 0o444
    else:
        main_name, mode = f"lib/lib{base}.so.{rng.randint(0, 9)}", 0o555
    files = [(main_name, _embed(corpora.fill(rng, sizes[0], pkg.mix), runpath), mode, None)]
    if main_name.startswith("lib/"):
        files.append((f"lib/lib{base}.so", None, 0, main_name.split("/")[-1]))
    files.append((f"lib/pkgconfig/{base}.pc" if pkg.kind != "data" else f"share/{base}/paths", paths_text.encode(),
                  0o444, None))
    for i, size in enumerate(sizes[1:]):
        kind = rng.choices(("include", "share", "doc"), (2, 5, 1))[0]
        mix = (0, 1, 0) if kind != "share" else pkg.mix
        name = {"include": f"include/{base}/h{i}.h", "share": f"share/{base}/part{i}.dat",
                "doc": f"share/doc/{base}/NOTES{i}"}[kind]
        files.append((name, corpora.fill(rng, size, mix), 0o444, None))
    return files


def write_item(root: str, pkg, path: str, deps: list[str], seed: str, corpora: Corpora) -> None:
    """Create the store item PATH under ROOT, unless it is there already (same path, same bytes)."""
    dest = os.path.join(root, path.lstrip("/"))
    if os.path.isdir(dest):
        return
    temp = dest + ".partial"
    if os.path.isdir(temp):
        shutil.rmtree(temp)
    for name, data, mode, target in item_files(pkg, path, deps, seed, corpora):
        fs = os.path.join(temp, name)
        os.makedirs(os.path.dirname(fs), exist_ok=True)
        if target is not None:
            os.symlink(target, fs)
            continue
        with open(fs, "wb") as f:
            f.write(data)
        os.chmod(fs, mode)
    os.rename(temp, dest)
