#!/usr/bin/env bash
# Thin wrapper for the main job: `scripts/run.sh specs/dafl-mnist-quick.yaml` is
# `dotnet run --project src/Cluster.Seed -c Release -- run specs/dafl-mnist-quick.yaml`, from
# wherever it is called: the spec, the paths it names and runs/ are read from the caller's directory.
# (Cluster.Seed makes TorchSharp loadable on Debian 12 by itself; see Native/NativeBootstrap.cs.)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
exec dotnet run --project "$repo/src/Cluster.Seed" -c Release -- run "$@"
