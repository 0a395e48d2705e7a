"""The fast paths closure-read and layer-split take on big graphs (issue 4)
agree with the slow, obvious definitions they replace: roots, cycles, stray
references, store path syntax, descendants, the record reader."""
import gc
import io
import json
import random

import pytest

from layerpipe import closure_read
from layerpipe.errors import LayerpipeError
from layerpipe.graph import Closure, closure_from_records
from layerpipe.records import Record, RecordReader, paused_gc
from layerpipe.storepath import HASH_LEN, NIX32_ALPHABET, make_store_path, path_pattern, split_store_path
from layerpipe.strategies.common import descendants, index_closure

STORE = "/gnu/store"


def random_dag(n: int, seed: int) -> dict[str, list[str]]:
    """N paths, each referring to earlier ones, a third of them to themselves too."""
    rng = random.Random(seed)
    paths = [make_store_path(STORE, f"p{i}-1.0", f"speed{seed}") for i in range(n)]
    refs = {}
    for i, path in enumerate(paths):
        own = {paths[rng.randrange(i)] for _ in range(rng.randint(0, min(i, 5)))} if i else set()
        refs[path] = sorted(own | ({path} if rng.random() < 0.33 else set()))
    return refs


def naive_referred(refs: dict[str, list[str]]) -> set[str]:
    return {r for p, rs in refs.items() for r in rs if r != p}


def path_records(refs: dict[str, list[str]], roots: bool = False) -> list[Record]:
    return [Record({"type": "path", "path": p, "narSize": 1, "references": rs,
                    **({"root": p not in naive_referred(refs)} if roots else {})}, f"in:{i + 1}")
            for i, (p, rs) in enumerate(refs.items())]


@pytest.mark.parametrize("seed", range(3))
def test_closure_from_records_roots(seed):
    refs = random_dag(300, seed)
    expected = sorted(p for p in refs if p not in naive_referred(refs))
    assert closure_from_records(path_records(refs)).roots == expected
    assert closure_from_records(path_records(refs, roots=True)).roots == expected


def test_a_path_referring_only_to_itself_is_a_root():
    a, b = (make_store_path(STORE, n) for n in ("a", "b"))
    c = closure_from_records(path_records({a: [a, b], b: [b]}))
    assert c.roots == [a] and c.references == {a: sorted([a, b]), b: [b]}


@pytest.mark.parametrize("refs, message", [
    ({"a": ["b", 3]}, "path record field 'references' must be a list of strings"),
    ({"a": "b"}, "path record field 'references' must be list"),
    ({"a": ["zz"]}, "'references' entry: 'zz': not a store path"),
])
def test_closure_from_records_bad_references(refs, message):
    a = make_store_path(STORE, "a")
    records = [Record({"type": "path", "path": a, "references": [] if refs["a"] is None else refs["a"]}, "in:1")]
    with pytest.raises(LayerpipeError, match=message):
        closure_from_records(records)


def test_closure_from_records_stray_reference_is_the_first_in_input_order():
    a, b, x, y = (make_store_path(STORE, n) for n in ("a", "b", "x", "y"))
    with pytest.raises(LayerpipeError) as err:
        closure_from_records(path_records({b: [y], a: [x]}))
    assert err.value.message == f"{b} refers to {y}, which has no path record" and err.value.where == "in:1"


def nix_json(refs: dict[str, list[str]]) -> bytes:
    return json.dumps([{"path": p, "narSize": 1, "references": rs} for p, rs in refs.items()]).encode()


def run_closure_read(data: bytes) -> list[dict]:
    out = io.BytesIO()
    closure_read.closure_read(io.BufferedReader(io.BytesIO(data)), "in", out)
    return [json.loads(line) for line in out.getvalue().splitlines()[1:]]


@pytest.mark.parametrize("seed", range(3))
def test_closure_read_roots_on_a_dag_with_self_references(seed):
    refs = random_dag(500, seed)
    out = run_closure_read(nix_json(refs))
    assert [r["path"] for r in out] == sorted(refs)
    assert {r["path"] for r in out if r["root"]} == set(refs) - naive_referred(refs)


@pytest.mark.parametrize("length", [1, 2, 3, 50])
def test_closure_read_finds_a_cycle_among_self_references(length):
    """A cycle A1 -> ... -> An -> A1 hung below a DAG whose items refer to
    themselves: found, with the message of the slow check (every item on or
    above the cycle)."""
    refs = random_dag(200, 7)
    ring = [make_store_path(STORE, f"ring{i}") for i in range(length)]
    for i, path in enumerate(ring):
        refs[path] = sorted({ring[(i + 1) % length], path})
    if length == 1:   # a self-reference alone is no cycle
        run_closure_read(nix_json(refs))
        return
    top = make_store_path(STORE, "top")
    refs[top] = [ring[0], top]
    with pytest.raises(LayerpipeError, match=rf"reference cycle among {length + 1} items, e\.g\. "):
        run_closure_read(nix_json(refs))


def test_closure_read_stray_reference():
    a, b = (make_store_path(STORE, n) for n in ("a", "b"))
    with pytest.raises(LayerpipeError, match=f"{a} refers to {b}, which is not in the closure"):
        run_closure_read(nix_json({a: [b]}))


def random_path(rng: random.Random) -> str:
    """A string near a store path: mostly well-formed, sometimes off by one rule."""
    alphabet = NIX32_ALPHABET + "eotu"
    hash_part = "".join(rng.choice(alphabet if rng.random() < 0.1 else NIX32_ALPHABET)
                        for _ in range(HASH_LEN + rng.choice([0, 0, 0, -1, 1])))
    size = rng.choice([1, 2, 10, 210, 211, 212])
    name = "".join(rng.choice("ab.-_+?=Z9 /é") if rng.random() < 0.05 else rng.choice("abc-.")
                   for _ in range(size))
    store = rng.choice([STORE, STORE, "/nix/store", "/gnu/store/x"])
    return f"{store}/{hash_part}{rng.choice('--_')}{name}"


def test_path_pattern_agrees_with_split_store_path():
    rng = random.Random(4)
    seen = set()
    for _ in range(5000):
        path = random_path(rng)
        try:
            ok = split_store_path(path)[0] == STORE
        except LayerpipeError:
            ok = False
        assert bool(path_pattern(STORE).fullmatch(path)) == ok, path
        seen.add(ok)
    assert seen == {True, False}
    assert path_pattern(STORE).fullmatch(make_store_path(STORE, "a" * 211))
    assert not path_pattern(STORE).fullmatch(make_store_path(STORE, "a" * 212))


@pytest.mark.parametrize("seed", range(3))
def test_descendants(seed):
    refs = random_dag(300, seed)
    graph = index_closure(Closure(refs, {p: 1 for p in refs}, []))
    for node in range(0, 300, 7):
        found, todo = set(), list(graph.children[node])
        while todo:
            kid = todo.pop()
            if kid not in found:
                found.add(kid)
                todo.extend(graph.children[kid])
        assert descendants(graph, node) == found


def test_index_closure_children_sorted_without_self_or_repeats():
    a, b, c = (make_store_path(STORE, n) for n in ("a", "b", "c"))
    graph = index_closure(Closure({a: [c, a, b, c], b: [b], c: []}, {}, []))
    number = {p: i for i, p in enumerate(graph.paths)}
    assert graph.children[number[a]] == sorted([number[b], number[c]])
    assert graph.children[number[b]] == [] and graph.parents[number[c]] == [number[a]]


def test_record_reader_fast_and_checked_ways():
    data = (b'{"type":"header","schema_version":1,"stages":["x"]}\n\n  \n'
            b'{"type":"path","path":"p"}\n{"type":"odd","n":[1,2]}\n')
    reader = RecordReader(io.BytesIO(data), "in")
    assert [(r.data, r.where) for r in reader] == [({"type": "path", "path": "p"}, "in:4"),
                                                   ({"type": "odd", "n": [1, 2]}, "in:5")]
    assert reader.header.stages == ["x"]
    for bad, message in [(b'{"type":1}\n', "string field 'type'"), (b"[1]\n", "JSON object"),
                         (b'{"type":"a"}', "truncated"), (b"{\n", "not a JSON record")]:
        with pytest.raises(LayerpipeError, match=message) as err:
            list(RecordReader(io.BytesIO(b'{"type":"a"}\n' + bad), "in"))
        assert err.value.where == "in:2"


def test_paused_gc_restores_the_collector():
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with paused_gc():
            assert not gc.isenabled()
            raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("seed", range(3))
def test_numbered_references_give_the_same_index(seed):
    """closure_from_records hands index_closure its references as numbers;
    the index is the one built from the path strings."""
    refs = random_dag(400, seed)
    built = closure_from_records(path_records(refs))
    plain = Closure(dict(built.references), dict(built.nar_size), list(built.roots))
    assert built.numbered is not None and plain.numbered is None
    fast, slow = index_closure(built), index_closure(plain)
    assert fast.children == slow.children and fast.parents == slow.parents
    assert fast.leaves_first == slow.leaves_first and fast.paths == slow.paths
