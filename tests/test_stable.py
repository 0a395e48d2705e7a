"""The stable strategy: its grouping on graphs worked out by hand, and the
reuse of previous builds (--previous), through the library and the command."""
import json
import subprocess
import sys

import pytest

from conftest import BIN, REPO, run_stage
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
    # app claims only itself; libfoo alone brings in glibc, so glibc is
    # libfoo's and has no event of its own.  Events, each weighed by its
    # class's share (application updates 2/2, swaps 1/2; no shared library)
    # over its ideal (sizes with a 512-byte header: glibc 612, libfoo 522,
    # app 513):
    #   libfoo's update touches libfoo, app     1/1035
    #   app's update touches app                1/513
    #   app's swap touches app                  1/2/513
    #   libfoo's swap touches all three         1/2/1647
    # chance: glibc 3.0e-4, libfoo 1.27e-3, app 4.19e-3.  Two layers:
    #   {glibc,libfoo} {app}:  1134*1.27e-3 + 513*4.19e-3 = 3.59   <- cheapest
    #   {glibc} {libfoo,app}:   612*3.0e-4 + 1035*4.19e-3 = 4.52
    #   {glibc,app} {libfoo}:  1125*4.19e-3 +  522*1.27e-3 = 5.38
    assert names(stable.split(CHAIN, 2)) == [["glibc", "libfoo"], ["app"]]
    assert names(stable.split(CHAIN, 1)) == [["app", "glibc", "libfoo"]]


# A profile with two applications; zlib is only app's (its "exclusive"
# library), glibc is shared.
TWO_APPS = closure({"glibc": [], "zlib": ["glibc"], "app": ["zlib", "glibc"], "app2": ["glibc"],
                    "profile": ["app", "app2"]},
                   {"glibc": 5000, "zlib": 300, "app": 1000, "app2": 1000, "profile": 10})


def test_a_library_only_one_application_uses_joins_that_application_first():
    # Events (ideal with headers: glibc 5512, zlib 812, app 1512, app2 1512,
    # profile 522); application updates weigh 2 in total, the others 1:
    #   glibc's update (the one shared library) touches all: 1/9870
    #   app's, app2's, profile's updates: 2/3/2034, 2/3/2034, 2/3/522
    #   swaps: app's (app, zlib, profile) 1/3/2846; app2's 1/3/2034;
    #   profile's 1/3/522.  zlib, only app's, has no event of its own.
    # (Weights this close share a bucket: glibc's and app's swap weigh
    # their mean, 1.09e-4.)  Singleton costs: glibc .60, zlib .18, app .83,
    # app2 .91, profile 1.54.  One merge; what each adds:
    #   zlib+app .27 (app's events already cover zlib's)   <- cheapest
    #   zlib+app2 .56, zlib+glibc .60, app+app2 1.40, zlib+profile 2.22
    assert names(stable.split(TWO_APPS, 4)) == [["glibc"], ["app", "zlib"], ["app2"], ["profile"]]


def test_local_search_moves_an_item_to_where_it_costs_least():
    # From a poor grouping, zlib moves next to app: out of {zlib, app2} it
    # saves .56, next to app it adds .27 (numbers above); nothing else helps.
    from layerpipe.strategies.common import index_closure
    graph = index_closure(TWO_APPS)
    model = stable.build_model(graph)
    node = {path.split("-", 1)[1]: i for i, path in enumerate(graph.paths)}
    start = [["glibc"], ["zlib", "app2"], ["app"], ["profile"]]
    bags = stable.improve(model, [[node[n] for n in group] for group in start])
    assert sorted(sorted(graph.paths[n].split("-", 1)[1] for n in bag.members) for bag in bags) == \
        [["app", "zlib"], ["app2"], ["glibc"], ["profile"]]


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


def test_the_man_pages_worked_example():
    # man/layer-split.1, STABLE MODEL: app-v1 joins the profile.
    names_ = ("profile", "app-v1", "libfoo", "glibc")
    path = {n: make_store_path("/gnu/store", n) for n in names_}
    refs = {"profile": ["app-v1", "libfoo"], "app-v1": ["libfoo", "glibc"], "libfoo": ["glibc"], "glibc": []}
    sizes = {"profile": 736, "app-v1": 560, "libfoo": 6368, "glibc": 78688}
    c = Closure({path[k]: [path[r] for r in v] for k, v in refs.items()}, {path[k]: v for k, v in sizes.items()},
                [path["profile"]])
    assert names(stable.split(c, 3)) == [["glibc"], ["libfoo"], ["app-v1", "profile"]]


def test_a_hub_heavy_closure_of_2000_paths(tmp_path):
    """bench/graph100k.py's shape (glibc referred to by 80% of the paths):
    merged groups used to keep stale neighbours and crash with a KeyError."""
    graph = tmp_path / "g.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "graph100k.py"), "--paths", "2000", "-o", str(graph)],
                   check=True)
    proc = subprocess.run(f"{BIN}/closure-read {graph} | {BIN}/layer-split -s stable --max-layers 100",
                          shell=True, capture_output=True, check=True)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    paths = sorted(r["path"] for r in lines if r["type"] == "path")
    layers = [r["paths"] for r in lines if r["type"] == "layer"]
    assert len(layers) == 99 and sorted(p for layer in layers for p in layer) == paths


def test_previous_layout_with_two_images_gives_the_layers_of_both(tmp_path):
    """Two images added to one OCI layout (image-assemble adds by tag) are
    two sibling builds: --previous DIR reads the layers of both, the first
    image's first, a layer they share once."""
    from layerpipe.previous import read_previous
    from tests.support.store import build_store
    store = build_store(str(tmp_path / "s"), app_text="v1")
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    layout = tmp_path / "layout"
    records = {}
    for tag, strategy in (("a:1", "stable"), ("b:1", "two-layer")):
        cmd = (f"{BIN}/closure-read --root {store.root} {graph} | {BIN}/layer-split -s {strategy}"
               f" | {BIN}/layer-tar --root {store.root} --blob-dir {tmp_path}/blobs"
               f" | tee {tmp_path}/{strategy}.ndjson | {BIN}/image-assemble -f oci --tag {tag} -o {layout}")
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        lines = (tmp_path / f"{strategy}.ndjson").read_text().splitlines()
        records[tag] = [(sorted(r["paths"]), r["digest"]) for r in map(json.loads, lines) if r["type"] == "layer"]
    got = read_previous(str(layout), "/gnu/store")
    assert got == records["a:1"] + [layer for layer in records["b:1"] if layer not in records["a:1"]]
    assert len(records["b:1"]) == 2 and len(got) > len(records["a:1"])
