#!/usr/bin/env python3
"""A ten-line splitter for the floor of the measure: one layer per new store item.

    closure-read B.refs | split_new.py OLD_PATHS | layer-tar | ...

OLD_PATHS lists the store paths of the image already on the target (A), one
a line.  Writes the path records through, then one `layer` record for each
store path that is not in OLD_PATHS, so that layer-tar tars and compresses
each new item on its own: the sum of their sizes is ideal(A->B).
"""
import json
import sys

old = set(open(sys.argv[1]).read().split())
records = [json.loads(line) for line in sys.stdin if line.strip()]
header = records.pop(0) if records and records[0]["type"] == "header" else {"type": "header", "schema_version": 1}
header["stages"] = [*header.get("stages", []), "split-new"]
new = sorted(r["path"] for r in records if r["type"] == "path" and r["path"] not in old)
out = [header, *records, *({"type": "layer", "index": i, "paths": [p], "strategy": "one-per-new-item"}
                           for i, p in enumerate(new))]
sys.stdout.write("".join(json.dumps(r) + "\n" for r in out))
