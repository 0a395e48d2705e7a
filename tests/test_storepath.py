"""storepath: store path syntax and nix-base32."""
import hashlib
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from layerpipe.errors import LayerpipeError
from layerpipe.storepath import (NIX32_ALPHABET, check_store_dir, make_store_path, name_of,
                                 nix32_decode, nix32_encode, split_store_path, store_dir_of)

HASH = "0mdqa9w1p6cmli6976v4wi0sw9r4p5pr"  # 32 valid characters
GOOD = f"/gnu/store/{HASH}-hello-2.12.1"


# -- nix-base32 -------------------------------------------------------------

def test_nix32_known_vector_sha256_of_empty_string():
    digest = hashlib.sha256(b"").digest()
    assert nix32_encode(digest) == "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
    assert nix32_decode("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73", 32) == digest


def test_nix32_known_vector_sha256_of_hello():
    # `nix-hash --type sha256 --to-base32 $(printf hello | sha256sum)` with Nix 2.8
    digest = hashlib.sha256(b"hello").digest()
    assert nix32_encode(digest) == "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic"


def test_nix32_store_path_hash_length():
    # Store path hash parts are 20 bytes: 160 bits -> 32 characters.
    assert len(nix32_encode(bytes(20))) == 32
    assert nix32_encode(bytes(20)) == "0" * 32
    assert nix32_encode(b"\xff" * 20) == "z" * 32


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_nix32_round_trip(data):
    text = nix32_encode(data)
    assert len(text) == (len(data) * 8 - 1) // 5 + 1
    assert set(text) <= set(NIX32_ALPHABET)
    assert nix32_decode(text, len(data)) == data


@pytest.mark.skipif(not shutil.which("nix-hash"), reason="nix-hash (nix-bin) not installed")
def test_nix32_agrees_with_nix_hash():
    digests = [hashlib.sha256(bytes([i]) * i).hexdigest() for i in (1, 7, 200)]
    for hex_digest in digests:
        want = subprocess.run(["nix-hash", "--type", "sha256", "--to-base32", hex_digest],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert nix32_encode(bytes.fromhex(hex_digest)) == want
        assert nix32_decode(want, 32).hex() == hex_digest


@pytest.mark.parametrize("text, nbytes", [
    ("0" * 51, 32),                      # one short
    ("0" * 53, 32),                      # one long
    ("e" + "0" * 51, 32),                # e, o, u, t are not in the alphabet
    ("0" * 51 + "o", 32),
    ("0" * 51 + "u", 32),
    ("0" * 51 + "t", 32),
    ("0" * 51 + "A", 32),                # upper case is not nix-base32
    ("2" + "0" * 51, 32),                # 52 characters hold 260 bits: the top 4 must be 0
])
def test_nix32_decode_refuses(text, nbytes):
    with pytest.raises(ValueError):
        nix32_decode(text, nbytes)


def test_nix32_alphabet_is_nix_s():
    assert NIX32_ALPHABET == "0123456789abcdfghijklmnpqrsvwxyz"
    assert not set("eout") & set(NIX32_ALPHABET)


# -- store paths ------------------------------------------------------------

def test_split_store_path():
    assert split_store_path(GOOD) == ("/gnu/store", HASH, "hello-2.12.1")
    assert store_dir_of(GOOD) == "/gnu/store"
    assert name_of(GOOD) == "hello-2.12.1"


@pytest.mark.parametrize("path", [
    f"/nix/store/{HASH}-a",
    f"/nix/store/{HASH}-x+y-1.0_rc=2?",
    f"/nix/store/{HASH}-name.with.dots-",
    f"/var/lib/my-store/{HASH}-ok",
    f"/gnu/store/{HASH}-" + "n" * 211,
])
def test_valid_store_paths(path):
    assert split_store_path(path)[1] == HASH


@pytest.mark.parametrize("bad", "eout")
def test_hash_part_with_letters_outside_nix32_is_refused(bad):
    with pytest.raises(LayerpipeError, match="hash part"):
        split_store_path(f"/gnu/store/{bad}{HASH[1:]}-hello")


@pytest.mark.parametrize("hash_part", [HASH[:31], HASH + "0", HASH.upper(), ""])
def test_hash_part_of_wrong_length_or_case_is_refused(hash_part):
    with pytest.raises(LayerpipeError, match="not a store path"):
        split_store_path(f"/gnu/store/{hash_part}-hello")


@pytest.mark.parametrize("path", [
    f"/gnu/../store/{HASH}-hello",
    f"/gnu/store/../{HASH}-hello",
    f"/gnu/./store/{HASH}-hello",
    f"/gnu//store/{HASH}-hello",
    f"gnu/store/{HASH}-hello",
    f"/{HASH}-hello",
    f"{HASH}-hello",
])
def test_bad_store_dirs_are_refused(path):
    with pytest.raises(LayerpipeError):
        split_store_path(path)


@pytest.mark.parametrize("name", [
    ".hidden", "..", ".", "", "with space", "slash/inside", "caf\u00e9", "tab\there",
    "star*", "colon:", "n" * 212, "nul\0",
])
def test_bad_names_are_refused(name):
    with pytest.raises(LayerpipeError):
        split_store_path(f"/gnu/store/{HASH}-{name}")


def test_no_dash_after_hash_is_refused():
    with pytest.raises(LayerpipeError, match="then '-'"):
        split_store_path(f"/gnu/store/{HASH}_hello")


def test_non_string_is_refused():
    with pytest.raises(LayerpipeError, match="must be a string"):
        split_store_path(42)


def test_error_message_names_the_path():
    with pytest.raises(LayerpipeError) as info:
        split_store_path("/gnu/store/nothash-x")
    assert "/gnu/store/nothash-x" in str(info.value)


@pytest.mark.parametrize("store_dir", ["/", "relative", "/gnu/store/", "/a/../b", "/a//b", "/a/./b", "/a\0b"])
def test_check_store_dir_refuses(store_dir):
    with pytest.raises(LayerpipeError):
        check_store_dir(store_dir)


@pytest.mark.parametrize("store_dir", ["/gnu/store", "/nix/store", "/s", "/home/me/.store/x..y"])
def test_check_store_dir_accepts(store_dir):
    assert check_store_dir(store_dir) == store_dir


def test_make_store_path_is_valid_and_deterministic():
    path = make_store_path("/gnu/store", "hello-2.12.1", "seed")
    assert split_store_path(path)[2] == "hello-2.12.1"
    assert path == make_store_path("/gnu/store", "hello-2.12.1", "seed")
    assert path != make_store_path("/gnu/store", "hello-2.12.1", "other seed")
    assert os.path.dirname(path) == "/gnu/store"
