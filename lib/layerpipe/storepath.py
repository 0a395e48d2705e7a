"""Store path syntax: `<store dir>/<32 nix-base32 chars>-<name>`, and nix-base32.

Guix and Nix share the rules: the hash part is 32 characters of the nix-base32
alphabet (no e, o, u, t), the name uses `[A-Za-z0-9+-._?=]` and does not start
with a dot; the store dir is an absolute, normalised directory.
"""
import functools
import re

from .errors import LayerpipeError

NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
HASH_LEN = 32
NAME_MAX = 211

_NAME_RE = re.compile(r"[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]*")
_HASH_RE = re.compile(f"[{NIX32_ALPHABET}]{{{HASH_LEN}}}")


@functools.lru_cache(maxsize=64)
def check_store_dir(store_dir: str) -> str:
    """Return STORE_DIR if it is absolute and normalised, else raise."""
    parts = store_dir.split("/")
    if not store_dir.startswith("/") or store_dir == "/" or store_dir.endswith("/"):
        raise LayerpipeError(f"{store_dir!r}: store directory must be absolute, without trailing slash")
    if any(p in ("", ".", "..") for p in parts[1:]) or "\0" in store_dir:
        raise LayerpipeError(f"{store_dir!r}: store directory must not contain '.', '..' or '//'")
    if not store_dir.isprintable():
        raise LayerpipeError(f"{store_dir!r}: store directory must not contain control characters")
    return store_dir


def split_store_path(path: str) -> tuple[str, str, str]:
    """Split PATH into (store dir, hash part, name), or raise with the reason."""
    if not isinstance(path, str):
        raise LayerpipeError(f"store path must be a string, not {type(path).__name__}")
    store_dir, slash, base = path.rpartition("/")
    if not slash or not store_dir:
        raise LayerpipeError(f"{path!r}: not a store path (expected <store dir>/<hash>-<name>)")
    check_store_dir(store_dir)
    hash_part, dash, name = base[:HASH_LEN], base[HASH_LEN:HASH_LEN + 1], base[HASH_LEN + 1:]
    if not _HASH_RE.fullmatch(hash_part) or dash != "-":
        raise LayerpipeError(f"{path!r}: not a store path (hash part must be 32 nix-base32 characters, then '-')")
    if not name or len(name) > NAME_MAX or not _NAME_RE.fullmatch(name):
        raise LayerpipeError(f"{path!r}: invalid store item name {name!r}")
    return store_dir, hash_part, name


@functools.lru_cache(maxsize=16)
def path_pattern(store_dir: str) -> re.Pattern:
    """Matches (fullmatch) exactly the paths in STORE_DIR that split_store_path
    accepts: the same rules in one C call, for closures of 100,000 paths."""
    name = f"{_NAME_RE.pattern[:-1]}{{0,{NAME_MAX - 1}}}"
    return re.compile(f"{re.escape(store_dir)}/{_HASH_RE.pattern}-{name}")


def store_dir_of(path: str) -> str:
    return split_store_path(path)[0]


def name_of(path: str) -> str:
    """The name after the hash part: `guile-3.0.9` for `/gnu/store/…-guile-3.0.9`."""
    return path.rsplit("/", 1)[-1][HASH_LEN + 1:]


def nix32_encode(data: bytes) -> str:
    """nix-base32, as Nix prints hashes: least significant 5 bits last."""
    out = []
    nbits = len(data) * 8
    for n in range((nbits - 1) // 5, -1, -1):
        bit = n * 5
        i, j = divmod(bit, 8)
        c = data[i] >> j
        if i + 1 < len(data):
            c |= data[i + 1] << (8 - j)
        out.append(NIX32_ALPHABET[c & 0x1F])
    return "".join(out)


def nix32_decode(text: str, nbytes: int) -> bytes:
    """Inverse of nix32_encode for a hash of NBYTES bytes; raises ValueError."""
    if len(text) != (nbytes * 8 - 1) // 5 + 1:
        raise ValueError("wrong length for nix-base32")
    out = bytearray(nbytes)
    for n, ch in enumerate(reversed(text)):
        digit = NIX32_ALPHABET.find(ch)
        if digit < 0:
            raise ValueError(f"invalid nix-base32 character {ch!r}")
        i, j = divmod(n * 5, 8)
        out[i] |= (digit << j) & 0xFF
        carry = digit >> (8 - j)
        if i + 1 < nbytes:
            out[i + 1] |= carry
        elif carry:
            raise ValueError("nix-base32 value out of range")
    return bytes(out)


def make_store_path(store_dir: str, name: str, seed: str = "") -> str:
    """A well-formed store path for NAME, its hash part derived from SEED.

    For tests and the demo store: real stores get their paths from Guix or Nix.
    """
    import hashlib  # only tests and the demo make paths: keep it off start-up

    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()[:20]
    return f"{store_dir}/{nix32_encode(digest)}-{name}"
