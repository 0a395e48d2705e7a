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
    assert len(image["layers"]) == 3  # base, top of two-layer, extra files
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= set(names)
    assert manifest[0]["RepoTags"] == ["app:1"]
    assert manifest[0]["Config"] == "blobs/sha256/" + image["image_id"].split(":")[1]
