#!/usr/bin/env bash
# Thin wrapper for the main job: `scripts/run.sh specs/dafl-mnist-quick.yaml` is
# `dotnet run --project src/Cluster.Seed -c Release -- run specs/dafl-mnist-quick.yaml`.
# (Cluster.Seed makes TorchSharp loadable on Debian 12 by itself; see Native/NativeBootstrap.cs.)
set -euo pipefail
cd "$(dirname "$0")/.."
exec dotnet run --project src/Cluster.Seed -c Release -- run "$@"
