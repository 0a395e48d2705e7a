#!/usr/bin/env bash
# Build a real layered image of a small store (busybox, a script that uses it,
# a profile), load it into podman and run it.  Needs root (podman, and
# .ci/install for the packages).  Leaves its files in ./demo-out.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$here/bin:$PATH"
out=${1:-demo-out}
rm -rf "$out" && mkdir -p "$out"
cd "$out"

"$here/examples/make-demo-store.py" root /gnu/store graph.refs

closure-read --root root graph.refs \
  | layer-split \
  | layer-tar --root root --blob-dir blobs \
  | image-assemble --tag layerpipe-demo:latest --entrypoint bin/hello --symlink /bin=bin -o demo.tar \
  | tee image.ndjson | jq -c 'select(.type == "image") | {image_id, tags, layers: [.layers[] | {digest, size}]}'

# A private podman configuration, so the demo touches no system settings.
cat > containers.conf <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat > storage.conf <<CONF
[storage]
driver = "vfs"
runroot = "$PWD/podman/run"
graphroot = "$PWD/podman/storage"
CONF
export CONTAINERS_CONF=$PWD/containers.conf CONTAINERS_STORAGE_CONF=$PWD/storage.conf
podman load -i demo.tar
podman run --rm --network none layerpipe-demo:latest
