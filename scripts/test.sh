#!/usr/bin/env bash
# The test command (README, CI): makes TorchSharp loadable on Debian 12 (scripts/torch-native-env.sh,
# a no-op elsewhere), starts the PostgreSQL server the persistence tests use (scripts/postgres.sh,
# installing it from Debian packages when missing), makes Debian's PyTorch importable for the tests
# that check against it (scripts/python-torch.sh) and installs Debian's Chromium for the dashboard's
# browser test (scripts/chromium.sh), both beside the build, then runs every test. Extra arguments go to `dotnet test`.
set -euo pipefail
cd "$(dirname "$0")/.."
shim=$(scripts/torch-native-env.sh)
if [ -n "$shim" ]; then export LD_LIBRARY_PATH="$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
# the engine's numerics settings (Native/NativeBootstrap.cs sets them on re-exec for the programs)
export MKL_CBWR=${MKL_CBWR:-AUTO,STRICT}
CLUSTERDISTILL_PG=$(scripts/postgres.sh)
export CLUSTERDISTILL_PG
# the package installs wait on the network and the disk, the build on the CPU: they run side by side
installs=$(mktemp)
( scripts/python-torch.sh && scripts/chromium.sh ) >"$installs" 2>&1 &
pid=$!
dotnet build ClusterDistill.sln -c Release -nologo -v quiet || { wait "$pid" || true; cat "$installs"; exit 1; }
if ! wait "$pid"; then cat "$installs"; exit 1; fi
grep -v '^/' "$installs" >&2 || true
CLUSTERDISTILL_CHROMIUM=$(tail -1 "$installs")
export CLUSTERDISTILL_CHROMIUM
# --blame: a test host that dies names the tests it was running (the log then says which)
exec dotnet test ClusterDistill.sln -c Release --no-build --blame --logger "console;verbosity=normal" "$@"
