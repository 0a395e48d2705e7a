"""The layering strategies size, popularity and auto on graphs small enough to
work out by hand, against slow oracles written from the peers' definitions,
on a large random graph, and through the real layer-split command."""
import json
import random

import pytest

from conftest import run_stage
from layerpipe.errors import LayerpipeError
from layerpipe.graph import Closure
from layerpipe.storepath import make_store_path, name_of
from layerpipe.strategies import STRATEGIES, auto, popularity, size

STORE = "/nix/store"


def sp(name: str) -> str:
    return make_store_path(STORE, name)


def closure(graph: dict[str, list[str]], sizes: dict[str, int] | None = None, *,
            self_refs: bool = False, full_paths: bool = False) -> Closure:
    """A Closure from short names (or full store paths), every size 0 unless given."""
    path = (lambda n: n) if full_paths else sp
    refs = {path(n): [path(r) for r in rs] + ([path(n)] if self_refs else []) for n, rs in graph.items()}
    nar = {path(n): (sizes or {}).get(n, 0) for n in graph}
    return Closure(references=refs, nar_size=nar, roots=[])


def names(layers: list[list[str]]) -> list[list[str]]:
    """Layers as sorted short names, base first."""
    return [sorted(name_of(p) for p in layer) for layer in layers]


def check_partition(layers: list[list[str]], c: Closure, budget: int) -> None:
    assert sorted(p for layer in layers for p in layer) == c.paths
    assert all(layers) and len(layers) <= budget


# Graham Christensen's example from closure-graph.py (and issue 3):
# A->B, A->G, B->C, B->E, C->D, C->E, D->F, E->F.
GRAHAM = {"a": ["b", "g"], "b": ["c", "e"], "c": ["d", "e"], "d": ["f"], "e": ["f"], "f": [], "g": []}
HASH_0 = "0" * 32   # the smallest hash part
HASH_Z = "z" * 32   # the largest


# -- size --------------------------------------------------------------------

# Guix with --max-layers=M: the M-2 largest alone, the rest in one layer; our
# budget is B = M-1 store layers, so the B-1 largest alone.  References play
# no part.
SIZED = {"a": ["b"], "b": ["c"], "c": [], "d": ["a"], "e": []}
SIZES = {"a": 50, "b": 40, "c": 30, "d": 20, "e": 10}


@pytest.mark.parametrize("budget, expected", [
    (3, [["a"], ["b"], ["c", "d", "e"]]),          # B-1 = 2 alone, 3 together
    (4, [["a"], ["b"], ["c"], ["d", "e"]]),
    (5, [["a"], ["b"], ["c"], ["d"], ["e"]]),      # 5 items, 5 layers: each alone
    (10, [["a"], ["b"], ["c"], ["d"], ["e"]]),     # a budget that does not bind
    (1, [["a", "b", "c", "d", "e"]]),
])
def test_size_largest_alone_at_the_base(budget, expected):
    c = closure(SIZED, SIZES)
    layers = size.split(c, budget)
    assert names(layers) == expected
    check_partition(layers, c, budget)


def test_size_equal_sizes_go_by_store_path_not_name():
    # zeta's hash part sorts first, alpha's last: the path decides, so zeta
    # is the second layer although "alpha" < "zeta".
    zeta, alpha = f"{STORE}/{HASH_0}-zeta", f"{STORE}/{HASH_Z}-alpha"
    c = closure({sp("big"): [], zeta: [], alpha: []}, {sp("big"): 9, zeta: 7, alpha: 7}, full_paths=True)
    assert names(size.split(c, 3)) == [["big"], ["zeta"], ["alpha"]]
    assert names(size.split(c, 2)) == [["big"], ["alpha", "zeta"]]


# -- popularity ----------------------------------------------------------------

# P(w), the reference chains from the root A down to w: A1 B1 C1 D1 G1, E2
# (A-B-E, A-B-C-E), F3 (via D, and via both Es).  A path's score sums P over
# itself and everything that refers to it, directly or not:
#   A = 1;  B = A+B = 2;  G = A+G = 2;  C = A+B+C = 3;  D = A+B+C+D = 4;
#   E = A+B+C+E = 1+1+1+2 = 5 (A and B once each, though two chains reach E);
#   F = A+B+C+D+E+F = 1+1+1+1+2+3 = 9.
# Graham's counter merging in closure-graph.py's comment ends with the same
# (A:1, B:2, C:3, D:4, E:5, F:9, G:2).  B and G tie at 2: package names b < g.
GRAHAM_SCORES = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 9, "g": 2}
GRAHAM_ORDER = ["f", "e", "d", "c", "b", "g", "a"]


@pytest.mark.parametrize("self_refs", [False, True])
def test_popularity_scores_grahams_example(self_refs):
    c = closure(GRAHAM, self_refs=self_refs)   # self-references change nothing
    assert {name_of(p): s for p, s in popularity.scores(c).items()} == GRAHAM_SCORES
    assert [name_of(p) for p in popularity.popularity_order(c)] == GRAHAM_ORDER


@pytest.mark.parametrize("budget, expected", [
    (7, [["f"], ["e"], ["d"], ["c"], ["b"], ["g"], ["a"]]),   # 6 alone + the 1 left: no binding
    (10, [["f"], ["e"], ["d"], ["c"], ["b"], ["g"], ["a"]]),
    (6, [["f"], ["e"], ["d"], ["c"], ["b"], ["a", "g"]]),
    (3, [["f"], ["e"], ["a", "b", "c", "d", "g"]]),           # the 2 most popular alone
    (1, [["a", "b", "c", "d", "e", "f", "g"]]),
])
def test_popularity_layers_grahams_example(budget, expected):
    c = closure(GRAHAM)
    layers = popularity.split(c, budget)
    assert names(layers) == expected
    check_partition(layers, c, budget)


def test_popularity_several_roots():
    # Roots web and cli (nothing refers to them), web -> lib, cli -> lib, web -> ui.
    # P: web 1, cli 1, ui 1, lib 2.  Scores: web 1, cli 1, ui = web+ui = 2,
    # lib = web+cli+lib = 4.  cli and web tie: package names c < w.
    c = closure({"web": ["lib", "ui"], "cli": ["lib"], "lib": [], "ui": []})
    assert {name_of(p): s for p, s in popularity.scores(c).items()} == {"web": 1, "cli": 1, "ui": 2, "lib": 4}
    assert names(popularity.split(c, 3)) == [["lib"], ["ui"], ["cli", "web"]]
    assert names(popularity.split(c, 4)) == [["lib"], ["ui"], ["cli"], ["web"]]


def test_popularity_ties_go_by_package_name_then_hash():
    # Four roots, all scoring 1.  nixpkgs' package_name moves the part before
    # the first "-" (store dir and hash) to the end: "bash-/nix/store/zzz...",
    # so bash (largest hash) comes before zsh (smallest hash); the two hellos
    # differ only in the hash part, which then decides.
    zsh, bash = f"{STORE}/{HASH_0}-zsh", f"{STORE}/{HASH_Z}-bash"
    hello_0, hello_z = f"{STORE}/{HASH_0}-hello", f"{STORE}/{HASH_Z}-hello"
    c = closure({zsh: [], bash: [], hello_0: [], hello_z: []}, full_paths=True)
    assert popularity.popularity_order(c) == [bash, hello_0, hello_z, zsh]
    assert popularity.package_name(bash) == f"bash-{STORE}/{HASH_Z}"


def test_popularity_score_is_no_sum_over_parents():
    # Diamond A -> B, A -> C, B -> D, C -> D: P is A1 B1 C1 D2, so D scores
    # A+B+C+D = 5; adding the parents' scores (B2 + C2 + P(D)) would say 6.
    c = closure({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []})
    assert {name_of(p): s for p, s in popularity.scores(c).items()} == {"a": 1, "b": 2, "c": 2, "d": 5}


def contest_by_unfolding(c: Closure) -> dict[str, int]:
    """Graham's description, step by step: below each root the graph is
    unfolded into a tree; a node's counters are its children, each counted
    once, merged with the children's own counters, each plus one.  The roots
    are counted once each, their counters merged the same way.  Exponential."""
    refs = {p: sorted({r for r in rs if r != p}) for p, rs in c.references.items()}

    def counters(node: str) -> dict[str, int]:
        merged: dict[str, int] = {}
        for kid in refs[node]:
            merged[kid] = merged.get(kid, 0) + 1
            for path, count in counters(kid).items():
                merged[path] = merged.get(path, 0) + count + 1
        return merged

    referenced = {r for rs in refs.values() for r in rs}
    return counters_of_roots([p for p in sorted(refs) if p not in referenced], counters)


def counters_of_roots(roots, counters):
    total: dict[str, int] = {}
    for root in roots:
        total[root] = total.get(root, 0) + 1
        for path, count in counters(root).items():
            total[path] = total.get(path, 0) + count + 1
    return total


def random_dag(rnd: random.Random, n: int, fanout: int, self_refs: bool = False) -> Closure:
    """N paths; each refers to up to FANOUT earlier ones; names shuffled so
    that path order says nothing about the graph; sizes with ties."""
    labels = [f"p{i}" for i in range(n)]
    rnd.shuffle(labels)
    graph = {labels[i]: sorted({labels[rnd.randrange(i)] for _ in range(rnd.randint(0, fanout))}) if i else []
             for i in range(n)}
    sizes = {label: rnd.choice([0, 1, 1, 2, 5, 100, 3000]) for label in labels}
    return closure(graph, sizes, self_refs=self_refs)


def test_popularity_matches_the_unfolding_on_random_graphs():
    rnd = random.Random(20240611)
    for _ in range(300):
        c = random_dag(rnd, rnd.randint(1, 9), 3, self_refs=rnd.random() < 0.5)
        assert popularity.scores(c) == contest_by_unfolding(c)
        full = popularity.popularity_order(c)
        for limit in range(len(full) + 2):   # the pruned computation agrees
            assert popularity.popularity_order(c, limit) == full[:limit]


# -- auto ----------------------------------------------------------------------

# app -> python, libfoo; python -> openssl, glibc; libfoo -> glibc; openssl -> glibc.
# Candidates by size: python 100, glibc 30, openssl 20, libfoo 10, app 5.
#  1. python: python and what it needs (openssl, glibc) get {python}; app,
#     libfoo keep {}.  Layers: {python}, {} = 2.
#  2. glibc: {glibc}; it needs nothing.  3 layers.
#  3. openssl: {openssl}; glibc keeps {glibc} (a primary).  4 layers.
#  4. libfoo: {libfoo}.  5 layers.   5. app: {app}; {} is gone.  5 layers.
# Closure totals: glibc 30, libfoo 40, openssl 50, python 150, app (all) 165.
APP = {"app": ["python", "libfoo"], "python": ["openssl", "glibc"], "libfoo": ["glibc"],
       "openssl": ["glibc"], "glibc": []}
APP_SIZES = {"glibc": 30, "python": 100, "openssl": 20, "libfoo": 10, "app": 5}


@pytest.mark.parametrize("budget, expected", [
    (5, [["glibc"], ["libfoo"], ["openssl"], ["python"], ["app"]]),
    (10, [["glibc"], ["libfoo"], ["openssl"], ["python"], ["app"]]),
    # step 4 would make 5: stop after 3.  {python}: python only, total 150.
    (4, [["glibc"], ["openssl"], ["python"], ["app", "libfoo"]]),
    # step 3 would make 4: stop after 2.  {python}: python, openssl (150); {}: app, libfoo (165).
    (3, [["glibc"], ["openssl", "python"], ["app", "libfoo"]]),
    # step 2 would make 3: stop after 1.
    (2, [["glibc", "openssl", "python"], ["app", "libfoo"]]),
    # step 1 already makes 2.
    (1, [["app", "glibc", "libfoo", "openssl", "python"]]),
])
@pytest.mark.parametrize("self_refs", [False, True])
def test_auto_primaries_take_what_only_they_need(budget, expected, self_refs):
    c = closure(APP, APP_SIZES, self_refs=self_refs)
    layers = auto.split(c, budget)
    assert names(layers) == expected
    check_partition(layers, c, budget)


# root -> big1, big2; big1 -> shared, only1; big2 -> shared; shared -> base.
# Candidates: big1 100, big2 90, only1 6, shared 5, base 3, root 1.
#  1. big1: big1, shared, only1, base get {big1}; root, big2 keep {}.  2 layers.
#  2. big2: big2 {big2}; shared and base are needed by both: {big1, big2}.
#     Layers {}, {big1} (big1, only1), {big2}, {big1, big2} = 4.
#  3. only1: {only1}.  5 layers.
#  4. shared: {shared}; base was {big1, big2}, but both reach it through
#     shared, so it becomes {shared}; {big1, big2} is gone.  Still 5.
#  5. base: {base}.  6 layers.   6. root: {root}; {} is gone.  6 layers.
# Closure totals: base 3, only1 6, shared+base 8, big2 98, big1 114, root 205.
SHARED = {"root": ["big1", "big2"], "big1": ["shared", "only1"], "big2": ["shared"],
          "shared": ["base"], "only1": [], "base": []}
SHARED_SIZES = {"big1": 100, "big2": 90, "only1": 6, "shared": 5, "base": 3, "root": 1}


@pytest.mark.parametrize("budget, expected", [
    (6, [["base"], ["only1"], ["shared"], ["big2"], ["big1"], ["root"]]),
    (5, [["only1"], ["base", "shared"], ["big2"], ["big1"], ["root"]]),     # stop before 5.
    (4, [["base", "shared"], ["big2"], ["big1", "only1"], ["root"]]),       # stop before 3.
    (3, [["base", "big1", "only1", "shared"], ["big2", "root"]]),           # stop before 2.
    (2, [["base", "big1", "only1", "shared"], ["big2", "root"]]),
])
def test_auto_groups_by_the_set_of_primaries(budget, expected):
    c = closure(SHARED, SHARED_SIZES)
    layers = auto.split(c, budget)
    assert names(layers) == expected
    check_partition(layers, c, budget)


def test_auto_equal_sizes_go_by_store_path():
    # Two roots of equal size over z.  zeta's path sorts first, so it is the
    # first primary: {zeta} = zeta, z (total 11); {} = alpha (alpha + z = 11).
    # The totals and path counts (2) tie; the layer with the smallest path,
    # zeta's, comes first.  With budget 3: alpha next, then z, which both
    # reach: {z} (1), {zeta} (11), {alpha} (11).
    zeta, alpha, z = f"{STORE}/{HASH_0}-zeta", f"{STORE}/{HASH_Z}-alpha", sp("z")
    c = closure({zeta: [z], alpha: [z], z: []}, {zeta: 10, alpha: 10, z: 1}, full_paths=True)
    assert names(auto.split(c, 2)) == [["z", "zeta"], ["alpha"]]
    assert names(auto.split(c, 3)) == [["z"], ["zeta"], ["alpha"]]


def auto_by_definition(c: Closure, budget: int) -> list[list[str]]:
    """The rule as auto.py's docstring states it, recomputed from scratch for
    every count of primaries.  Slow."""
    below = {p: set() for p in c.paths}
    for p in c.paths:
        todo = [r for r in c.references[p] if r != p]
        while todo:
            r = todo.pop()
            if r not in below[p]:
                below[p].add(r)
                todo += [s for s in c.references[r] if s != r]
    candidates = sorted(c.paths, key=lambda p: (-c.nar_size[p], p))

    def labels(primaries):
        result = {}
        for p in c.paths:
            users = {q for q in primaries if p in below[q]}
            result[p] = frozenset([p]) if p in primaries else \
                frozenset(q for q in users if not any(o in below[q] for o in users))
        return result

    chosen = labels(set())
    for k in range(1, len(candidates) + 1):
        trial = labels(set(candidates[:k]))
        if len(set(trial.values())) > budget:
            break
        chosen = trial
    groups = {}
    for p in c.paths:
        groups.setdefault(chosen[p], []).append(p)

    def key(layer):
        reach = set(layer).union(*(below[p] for p in layer))
        return sum(c.nar_size[p] for p in reach), len(reach), min(layer)
    return sorted(groups.values(), key=key)


def test_auto_matches_its_definition_on_random_graphs():
    rnd = random.Random(1955)
    for _ in range(300):
        c = random_dag(rnd, rnd.randint(1, 10), 3, self_refs=rnd.random() < 0.3)
        budget = rnd.randint(1, 8)
        assert auto.split(c, budget) == auto_by_definition(c, budget)


# -- all three -----------------------------------------------------------------

@pytest.fixture(scope="module")
def large():
    return random_dag(random.Random(7), 20_000, 4)


@pytest.mark.parametrize("name", ["size", "popularity", "auto"])
def test_large_random_graph(large, name):
    """20,000 paths, each referring to up to 4 earlier ones: each strategy
    finishes in well under a second and respects the budget."""
    layers = STRATEGIES[name](large, 99)
    check_partition(layers, large, 99)
    if name == "popularity":   # the pruned contest agrees with the full one
        assert [layer[0] for layer in layers[:98]] == popularity.popularity_order(large)[:98]


@pytest.mark.parametrize("name", ["popularity", "auto"])
def test_cycle_is_refused(name):
    c = closure({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]})
    with pytest.raises(LayerpipeError, match=r"cycle \(/nix/store/\S+-a -> \S+-b -> \S+-c -> \S+-a\)"):
        STRATEGIES[name](c, 5)


# -- through bin/layer-split ---------------------------------------------------------

def records_of(graph: dict[str, list[str]], sizes: dict[str, int]) -> bytes:
    lines = [{"type": "header", "schema_version": 1, "stages": ["test"]}]
    lines += [{"type": "path", "path": sp(n), "narSize": sizes[n], "references": sorted(sp(r) for r in rs)}
              for n, rs in sorted(graph.items())]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def layer_records(stdout: bytes) -> list[dict]:
    return [r for r in map(json.loads, stdout.decode().splitlines()) if r["type"] == "layer"]


@pytest.mark.parametrize("strategy, max_layers, expected", [
    # budget 3 store layers: the 2 largest alone.
    ("size", "4", [["big1"], ["big2"], ["base", "only1", "root", "shared"]]),
    # scores: root 1, big1 2, big2 2, only1 3, shared = root+big1+big2+shared = 1+1+1+2 = 5,
    # base = 5 + P(base) 2 = 7.
    ("popularity", "4", [["base"], ["shared"], ["big1", "big2", "only1", "root"]]),
    ("auto", "5", [["base", "shared"], ["big2"], ["big1", "only1"], ["root"]]),
    ("auto", "125", [["base"], ["only1"], ["shared"], ["big2"], ["big1"], ["root"]]),
])
def test_layer_split_command(strategy, max_layers, expected):
    proc = run_stage("layer-split", "--strategy", strategy, "--max-layers", max_layers,
                     input=records_of(SHARED, SHARED_SIZES))
    layers = layer_records(proc.stdout)
    assert [r["index"] for r in layers] == list(range(len(layers)))
    assert all(r["strategy"] == strategy and r["paths"] == sorted(r["paths"]) for r in layers)
    assert names([r["paths"] for r in layers]) == expected


@pytest.mark.parametrize("strategy", ["size", "popularity", "auto"])
def test_layer_split_ignores_input_order(strategy):
    """Records and references in reverse order: the same layer records."""
    forward = records_of(APP, APP_SIZES)
    header, *paths = forward.splitlines(keepends=True)
    backward = [json.loads(line) for line in reversed(paths)]
    for rec in backward:
        rec["references"].reverse()
    backward = header + b"".join(json.dumps(rec).encode() + b"\n" for rec in backward)
    outputs = [layer_records(run_stage("layer-split", "--strategy", strategy, "--max-layers", "4",
                                       input=data).stdout) for data in (forward, backward)]
    assert outputs[0] == outputs[1] and len(outputs[0]) == 3


@pytest.mark.parametrize("strategy", ["size", "popularity", "auto"])
@pytest.mark.parametrize("max_layers", ["2", "3", "100"])
def test_closure_read_then_layer_split(store, tmp_path, strategy, max_layers):
    """The real pair on the test store: glibc-2.39 is the largest item, the
    most popular, and a primary that needs nothing, so it is alone at the base
    whenever there is room for two store layers."""
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    records = run_stage("closure-read", "--root", store.root, graph).stdout
    proc = run_stage("layer-split", "--strategy", strategy, "--max-layers", max_layers, input=records)
    layers = [r["paths"] for r in layer_records(proc.stdout)]
    assert sorted(p for layer in layers for p in layer) == sorted(store.references)
    assert len(layers) <= int(max_layers) - 1
    if max_layers != "2":
        assert layers[0] == [store.paths["glibc"]]


def test_layer_split_refuses_a_cycle():
    graph = {"a": ["b"], "b": ["a"]}
    proc = run_stage("layer-split", "--strategy", "popularity", input=records_of(graph, {"a": 1, "b": 1}),
                     check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith("layer-split: store paths refer to each other in a cycle (") and err.count("\n") == 1
