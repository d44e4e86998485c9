#!/usr/bin/env bash
# The test command (README, CI): makes TorchSharp loadable on Debian 12 (scripts/torch-native-env.sh,
# a no-op elsewhere), starts the PostgreSQL server the persistence tests use (scripts/postgres.sh,
# installing it from Debian packages when missing), makes Debian's PyTorch importable for the tests
# that check against it (scripts/python-torch.sh, likewise), then runs every test. Extra arguments go to `dotnet test`.
set -euo pipefail
cd "$(dirname "$0")/.."
shim=$(scripts/torch-native-env.sh)
if [ -n "$shim" ]; then export LD_LIBRARY_PATH="$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
# the engine's numerics settings (Native/NativeBootstrap.cs sets them on re-exec for the programs)
export MKL_CBWR=${MKL_CBWR:-AUTO,STRICT}
scripts/python-torch.sh
CLUSTERDISTILL_PG=$(scripts/postgres.sh)
export CLUSTERDISTILL_PG
exec dotnet test ClusterDistill.sln -c Release --logger "console;verbosity=normal" "$@"
