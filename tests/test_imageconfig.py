"""imageconfig: canonical JSON, tags, architectures, config and manifest documents."""
import platform
import re

import pytest
from hypothesis import example, given, settings, strategies as st

from layerpipe import imageconfig as ic
from layerpipe.errors import UsageError

# distribution/reference: path-component := alpha-numeric [separator alpha-numeric]*,
# separator := [_.] | __ | [-]*, and a tag := [\w][\w.-]{0,127}.
DOCKER_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
DOCKER_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)


# -- canonical_tag: Guix's rules, made safe for Docker ---------------------------

@pytest.mark.parametrize("given_tag, want", [
    ("hello", "hello:latest"),
    ("Hello", "hello:latest"),                         # lower case
    ("hello:2.12.1", "hello:2.12.1"),
    ("hello:V1_rc", "hello:V1_rc"),                    # tags keep their case
    ("Hello World:1.0", "hello.world:1.0"),            # invalid characters -> '.'
    ("guile+gnutls", "guile.gnutls:latest"),
    ("--hello__", "hello:latest"),                     # separators trimmed
    ("hello!", "hello:latest"),                        # ... also those made from invalid characters
    ("gtk+-3.24", "gtk.3.24:latest"),                  # a run of separators with '.' is one '.'
    ("a..b__c", "a.b.c:latest"),
    ("a--b", "a--b:latest"),                           # dashes may repeat
    ("...x", "xa:latest"),                             # padded to 2 characters with 'a'
    ("a", "aa:latest"),
    ("_", "aa:latest"),                                # nothing left: Guix pads the empty name
    ("!!!", "aa:latest"),
    ("team/app", "team/app:latest"),
    ("Team/App:v1", "team/app:v1"),
    ("x/y", "x/y:latest"),
    ("localhost/app", "localhost/app:latest"),         # registry hosts kept as they are
    ("localhost:5000/App:v1", "localhost:5000/app:v1"),
    ("registry.example.com/Team/App", "registry.example.com/team/app:latest"),
    ("registry.example.com:443/a/b:c", "registry.example.com:443/a/b:c"),
])
def test_canonical_tag(given_tag, want):
    assert ic.canonical_tag(given_tag) == want


def test_canonical_tag_truncates_long_names_to_255():
    name = ic.canonical_tag("x" * 300).split(":")[0]
    assert name == "x" * 255


@pytest.mark.parametrize("bad", ["app:", "app:-x", "app:.x", "app:" + "t" * 129, "", "/app", "a//b",
                                 "app:t\u00e9", "team/!!!", "!/app", "bad_host.example.com/app"])
def test_canonical_tag_refuses(bad):
    with pytest.raises(UsageError, match="--tag"):
        ic.canonical_tag(bad)


@settings(max_examples=100, deadline=None)
@given(st.text(st.sampled_from("aZ09_.-\u00e9/:@ "), min_size=1, max_size=130))
def test_tags_are_kept_when_docker_takes_them(tag):
    if DOCKER_TAG.fullmatch(tag):
        assert ic.canonical_tag(f"app:{tag}") == f"app:{tag}"
    elif "/" not in tag and ":" not in tag:
        with pytest.raises(UsageError, match="invalid tag"):
            ic.canonical_tag(f"app:{tag}")


def test_canonical_tag_accepts_longest_tag():
    assert ic.canonical_tag("app:" + "t" * 128).endswith(":" + "t" * 128)


def test_registry_host_with_upper_case_is_kept():
    """Docker's grammar allows upper case in the domain, only there."""
    assert ic.canonical_tag("Registry.Example.com:443/Team/App:c") == "Registry.Example.com:443/team/app:c"


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_characters="/:", blacklist_categories=("Cs",)), min_size=1, max_size=300))
@example("foo!")
@example("gtk+-3.24")
@example("a..b")
@example("\u00e9t\u00e9")
@example("K")  # the Kelvin sign: lower() makes it ASCII 'k'
def test_canonical_tag_is_a_valid_docker_reference(name):
    """Whatever the name: a repository Docker takes (lower-case ASCII, 2 to 255
    characters, separators only between letters and digits) and tag latest."""
    repository, _, version = ic.canonical_tag(name).rpartition(":")
    assert version == "latest"
    assert 2 <= len(repository) <= 255
    assert DOCKER_COMPONENT.fullmatch(repository), repository


@pytest.mark.parametrize("tag, want", [
    ("hello:1", "docker.io/library/hello:1"),
    ("team/app:1", "docker.io/team/app:1"),
    ("localhost/app:1", "localhost/app:1"),
    ("localhost:5000/app:1", "localhost:5000/app:1"),
    ("registry.example.com/app:1", "registry.example.com/app:1"),
])
def test_qualified_name(tag, want):
    assert ic.qualified_name(tag) == want


# -- architecture ------------------------------------------------------------

@pytest.mark.parametrize("given_arch, want", [
    ("x86_64-linux", "amd64"), ("aarch64-linux", "arm64"), ("i686-linux", "386"),
    ("armhf-linux", "arm"), ("x86_64-linux-gnu", "amd64"), ("aarch64-linux-gnu", "arm64"),
    ("riscv64-linux", "riscv64"), ("powerpc64le-linux", "ppc64le"), ("mips64el-linux", "mips64le"),
    ("amd64", "amd64"), ("arm64", "arm64"), ("386", "386"), ("arm", "arm"), ("s390x", "s390x"),
])
def test_architecture(given_arch, want):
    assert ic.architecture(given_arch) == want


@pytest.mark.parametrize("junk", ["junk", "linux", "sparc64-linux", "AMD64", "-linux", "x86-64"])
def test_unknown_architecture_is_a_usage_error(junk):
    with pytest.raises(UsageError, match="unknown architecture"):
        ic.architecture(junk)


def test_default_architecture_is_the_machines(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert ic.architecture(None) == "arm64"
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert ic.architecture(None) == "amd64"


# -- documents ---------------------------------------------------------------

def test_canonical_json_sorts_keys_without_spaces():
    assert ic.canonical_json({"b": 1, "a": {"d": [2, 1], "c": "\u00e9"}}) == \
        '{"a":{"c":"\u00e9","d":[2,1]},"b":1}'.encode()


@pytest.mark.parametrize("epoch, want", [(0, "1970-01-01T00:00:00Z"), (1, "1970-01-01T00:00:01Z"),
                                         (1700000000, "2023-11-14T22:13:20Z")])
def test_rfc3339(epoch, want):
    assert ic.rfc3339(epoch) == want


def test_split_pairs():
    assert ic.split_pairs(["A=1", "B=x=y", "C="], "--env") == [("A", "1"), ("B", "x=y"), ("C", "")]
    for bad in ("A", "=1"):
        with pytest.raises(UsageError, match=f"--env '{bad}'"):
            ic.split_pairs([bad], "--env")


def test_image_config_leaves_out_what_was_not_given():
    config = ic.image_config(arch="amd64", created="1970-01-01T00:00:01Z", diff_ids=["sha256:" + "0" * 64],
                             history=[{}], env=[], entrypoint=None, cmd=[], workdir=None, labels={})
    assert config == {"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:01Z", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}, "history": [{}]}


def test_image_config_with_everything():
    config = ic.image_config(arch="arm64", created="c", diff_ids=[], history=[], env=["A=1"],
                             entrypoint=["/bin/x", "-v"], cmd=["y"], workdir="/w", labels={"k": "v"})
    assert config["config"] == {"Env": ["A=1"], "Entrypoint": ["/bin/x", "-v"], "Cmd": ["y"],
                                "WorkingDir": "/w", "Labels": {"k": "v"}}


def test_manifest_and_descriptor():
    cfg = ic.descriptor(ic.CONFIG_MEDIA_TYPE, "sha256:" + "1" * 64, 10)
    layer = ic.descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "2" * 64, 20)
    assert ic.manifest(cfg, [layer]) == {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "1" * 64,
                   "size": 10},
        "layers": [layer]}
