"""The stable strategy: its grouping on graphs worked out by hand, and the
reuse of previous builds (--previous), through the library and the command."""
import json
import subprocess

import pytest

from conftest import BIN, run_stage
from layerpipe.graph import Closure
from layerpipe.storepath import make_store_path
from layerpipe.strategies import stable

P = {name: make_store_path("/nix/store", name) for name in
     ("glibc", "libfoo", "app", "app2", "profile", "zlib", "data")}


def names(layers):
    return [sorted(p.split("-", 1)[1] for p in layer) for layer in layers]


def closure(refs: dict, sizes: dict) -> Closure:
    references = {P[k]: [P[r] for r in v] for k, v in refs.items()}
    return Closure(references, {P[k]: s for k, s in sizes.items()},
                   [p for p in references if not any(p in r for r in references.values())])


CHAIN = closure({"glibc": [], "libfoo": ["glibc"], "app": ["libfoo"]},
                {"glibc": 100, "libfoo": 10, "app": 1})


def test_budget_not_binding_gives_one_layer_per_item_least_likely_to_change_first():
    assert names(stable.split(CHAIN, 5)) == [["glibc"], ["libfoo"], ["app"]]


def test_budget_binding_worked_by_hand():
    # Applications: the root (app) and what it refers to directly (libfoo).
    # Events: glibc's update (a library, weight 2) touches all three;
    # libfoo's (10) touches libfoo and app; app's own (10) touches app.
    # Sibling swaps (10): app claims only itself; libfoo brings in libfoo
    # and glibc, and app refers to them, so libfoo's swap touches all three.
    # P(glibc)=12, P(libfoo)=22, P(app)=42; sizes with a 512-byte header:
    # 612, 522, 513.  Two layers:
    #   {glibc,libfoo} {app}:  1134*22 + 513*42 = 46494   <- cheapest
    #   {glibc} {libfoo,app}:   612*12 + 1035*42 = 50814
    #   {glibc,app} {libfoo}:  1125*42 + 522*22 = 58734
    assert names(stable.split(CHAIN, 2)) == [["glibc", "libfoo"], ["app"]]
    assert names(stable.split(CHAIN, 1)) == [["app", "glibc", "libfoo"]]


def test_layers_carry_their_reason():
    layers = stable.split(CHAIN, 2)
    assert [layer.why["reason"] for layer in layers] == ["items that change together"] * 2


def _profile(app_name: str) -> Closure:
    return closure({"glibc": [], "zlib": ["glibc"], "libfoo": ["glibc", "zlib"], "data": [],
                    app_name: ["libfoo", "data"], "profile": [app_name]},
                   {"glibc": 9000, "zlib": 300, "libfoo": 2000, "data": 50, app_name: 700, "profile": 5})


def test_previous_layers_are_kept_at_the_base_in_their_order():
    first = stable.split(_profile("app"), 4)
    previous = [(list(layer), f"sha256:{i:064x}") for i, layer in enumerate(first)]
    # app replaced by app2 (and so a new profile: reuse the old profile's path
    # only in this unit test, by dropping it from what is kept)
    second = stable.split(_profile("app2"), 4, previous)
    kept = [layer for layer in second if layer.why["reason"] == "kept from a previous build"]
    assert kept == [layer for layer in first if P["app"] not in layer]
    assert second[:len(kept)] == kept
    assert [layer.why["kept_from"] for layer in kept] == [
        d for layer, d in previous if P["app"] not in layer]
    new = [p for layer in second[len(kept):] for p in layer]
    assert P["app2"] in new and not set(new) & {p for layer in kept for p in layer}


def test_a_previous_layer_with_a_missing_member_is_not_kept():
    c = _profile("app")
    layers = stable.split(c, 10, [([P["glibc"], P["app2"]], None), ([P["zlib"]], None)])
    assert layers[0] == [P["zlib"]] and layers[0].why == {"reason": "kept from a previous build"}
    assert [P["glibc"]] in layers


def test_overlapping_previous_layers_first_claim_wins():
    c = _profile("app")
    layers = stable.split(c, 10, [([P["glibc"], P["zlib"]], None), ([P["zlib"]], None)])
    assert sorted(layers[0]) == sorted([P["glibc"], P["zlib"]])
    assert sum(P["zlib"] in layer for layer in layers) == 1


def test_kept_layers_that_do_not_fit_are_merged_from_the_top(capsys):
    c = _profile("app")
    previous = [([p], None) for p in sorted(c.references)]
    layers = stable.split(c, 3, previous)
    assert len(layers) == 3 and sorted(p for layer in layers for p in layer) == sorted(c.references)
    assert layers[0] == previous[0][0] and layers[1] == previous[1][0]
    assert "do not fit the budget" in capsys.readouterr().err


def test_deterministic_whatever_the_record_order():
    c = _profile("app")
    shuffled = Closure(dict(reversed(list(c.references.items()))), c.nar_size, list(reversed(c.roots)))
    assert stable.split(c, 3) == stable.split(shuffled, 3)


def _pipeline(store, tmp_path, *split_args):
    tmp_path.mkdir(parents=True, exist_ok=True)
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    cmd = (f"{BIN}/closure-read --root {store.root} {graph} | {BIN}/layer-split -s stable "
           + " ".join(split_args) + f" | {BIN}/layer-tar --root {store.root} --blob-dir {tmp_path}/blobs")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


@pytest.mark.parametrize("previous_kind", ["records", "image"])
def test_app_update_with_previous_reuses_every_untouched_layer(tmp_path, previous_kind):
    """v2 changes only the app (new store path, new profile contents): every
    v1 layer without the app comes back with the very same digest."""
    from tests.support.store import build_store
    v1 = build_store(str(tmp_path / "v1"), app_text="v1")
    first = _pipeline(v1, tmp_path / "a")
    layers1 = [r for r in first if r["type"] == "layer"]
    prev = tmp_path / "v1.ndjson"
    prev.write_text("".join(json.dumps(r) + "\n" for r in first))
    if previous_kind == "image":
        run_stage("image-assemble", "-o", str(tmp_path / "v1.tar"), str(prev))
        prev = tmp_path / "v1.tar"
    v2 = build_store(str(tmp_path / "v2"), app_text="v2")
    second = _pipeline(v2, tmp_path / "b", "--previous", str(prev))
    layers2 = [r for r in second if r["type"] == "layer"]
    untouched = [l for l in layers1 if v1.paths["app"] not in l["paths"] and v1.paths["profile"] not in l["paths"]]
    assert untouched, "the first build should put the app apart from the libraries"
    assert [l["digest"] for l in layers2[:len(untouched)]] == [l["digest"] for l in untouched]
    assert all(l["kept_from"] == l["digest"] for l in layers2[:len(untouched)])


def test_reserve_and_previous_usage(tmp_path):
    records = run_stage("closure-read", "-", input=json.dumps(
        [{"path": P[k], "narSize": 1, "references": []} for k in ("glibc", "zlib", "data")]).encode()).stdout
    out = run_stage("layer-split", "-s", "stable", "--max-layers", "3", "--reserve", "1", input=records).stdout
    assert sum('"type":"layer"' in line for line in out.decode().splitlines()) == 1
    bad = run_stage("layer-split", "--max-layers", "3", "--reserve", "2", input=records, check=False)
    assert bad.returncode == 2 and b"--reserve" in bad.stderr
    bad = run_stage("layer-split", "-s", "auto", "--previous", "x", input=records, check=False)
    assert bad.returncode == 2 and bad.stderr.decode().startswith("layer-split: --previous is for --strategy stable")


def test_budget_of_one_with_previous_and_new_items_gives_one_layer(capsys):
    c = _profile("app2")
    layers = stable.split(c, 1, [([P["glibc"]], "sha256:" + "1" * 64)])
    assert len(layers) == 1 and sorted(layers[0]) == sorted(c.references)
    assert "no room to keep" in capsys.readouterr().err


def test_merged_previous_layers_say_so():
    c = _profile("app")
    layers = stable.split(c, 2, [([P["glibc"]], None), ([P["zlib"]], None), ([P["libfoo"]], None)])
    assert layers[0].why == {"reason": "previous layers merged to fit the budget"}
