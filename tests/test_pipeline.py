"""The four stages chained through real pipes, as a user runs them."""
import json
import subprocess
import tarfile

from conftest import BIN


def pipeline(store, tmp_path, out, *assemble_args, split_args=(), tar_args=()):
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    blobs = str(tmp_path / "blobs")
    cmd = (f"{BIN}/closure-read --root {store.root} {graph}"
           f" | {BIN}/layer-split {' '.join(split_args)}"
           f" | {BIN}/layer-tar --root {store.root} --blob-dir {blobs} {' '.join(tar_args)}"
           f" | {BIN}/image-assemble -o {out} {' '.join(assemble_args)}")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    return [json.loads(line) for line in lines]


def test_pipeline_writes_docker_archive_and_image_record(store, tmp_path):
    out = tmp_path / "app.tar"
    records = pipeline(store, tmp_path, out, "--tag", "app:1")
    header, image = records[0], records[-1]
    assert header["stages"] == ["closure-read", "layer-split", "layer-tar", "image-assemble"]
    assert image["type"] == "image" and image["tags"] == ["app:1"]
    assert len(image["layers"]) == 5  # stable: one per store item (4) within the budget, then extra files
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= set(names)
    assert manifest[0]["RepoTags"] == ["app:1"]
    assert manifest[0]["Config"] == "blobs/sha256/" + image["image_id"].split(":")[1]


SPLITTER = '''\
import json, sys
# A user's splitter: one layer per store item, largest first; header not needed.
paths = [json.loads(l) for l in sys.stdin if '"path"' in l]
paths = [p for p in paths if p["type"] == "path"]
paths.sort(key=lambda p: (-p["narSize"], p["path"]))
for i, p in enumerate(paths):
    print(json.dumps({"type": "layer", "index": i, "paths": [p["path"]], "note": "mine"}))
'''


def test_stage_replaced_by_a_script(store, tmp_path):
    script = tmp_path / "my-splitter.py"
    script.write_text(SPLITTER)
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    out = tmp_path / "img.tar"
    cmd = (f"{BIN}/closure-read --root {store.root} {graph} | python3 {script}"
           f" | {BIN}/layer-tar --root {store.root} --blob-dir {tmp_path}/blobs"
           f" | {BIN}/image-assemble -o {out} --entrypoint {store.paths['app']}/bin/app")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    image = json.loads(proc.stdout.decode().splitlines()[-1])
    assert len(image["layers"]) == len(store.references) + 1
    with tarfile.open(out) as tar:
        config = json.load(tar.extractfile("blobs/sha256/" + image["image_id"].split(":")[1]))
    assert config["config"]["Entrypoint"] == [store.paths["app"] + "/bin/app"]
    assert len(config["history"]) == len(image["layers"])


def test_jq_splitter_and_unknown_records_pass_through(store, tmp_path):
    """jq as layer-split; a record type no stage knows survives to the end."""
    graph = store.write_graph(str(tmp_path / "graph.refs"))
    jq = ("jq -c -s '(.[] | select(.type != \"path\")), {type: \"note\", text: \"keep me\"},"
          " ([.[] | select(.type == \"path\") | .path] | to_entries[]"
          " | {type: \"layer\", index: .key, paths: [.value]})'")
    cmd = (f"{BIN}/closure-read --root {store.root} {graph} | {jq}"
           f" | {BIN}/layer-tar --root {store.root} --blob-dir {tmp_path}/blobs"
           f" | {BIN}/image-assemble -o {tmp_path}/img.tar")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    records = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert {"type": "note", "text": "keep me"} in records
    assert records[-1]["type"] == "image" and len(records[-1]["layers"]) == 5
