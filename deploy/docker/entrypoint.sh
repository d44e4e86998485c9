#!/bin/sh
# The images' entrypoint: `seed ARGS` runs Cluster.Seed (serve, submit, status, ...), `node ARGS`
# runs Cluster.GpuNode (join). Nothing is compiled, installed or downloaded here: the image's
# libstdc++ is new enough for TorchSharp, and CLUSTERDISTILL_NATIVE_BUILD=off turns a mismatch into
# an error instead of a compiler run; datasets come from the data volume
# (CLUSTERDISTILL_DATA_FETCH=off: a missing one is an error that names the volume, never npm).
set -eu
app=${CLUSTERDISTILL_APP_DIR:-$(dirname "$0")}
case "${1:-}" in
  seed) shift; exec dotnet "$app/Cluster.Seed.dll" "$@" ;;
  node) shift; exec dotnet "$app/Cluster.GpuNode.dll" "$@" ;;
  *) echo "usage: entrypoint.sh seed|node ARGS (Cluster.Seed or Cluster.GpuNode)" >&2; exit 2 ;;
esac
