#!/usr/bin/env bash
# The test command (README, CI): makes TorchSharp loadable on Debian 12 (scripts/torch-native-env.sh,
# a no-op elsewhere), starts the PostgreSQL server the persistence tests use (scripts/postgres.sh,
# installing it from Debian packages when missing), makes Debian's PyTorch importable for the tests
# that check against it (scripts/python-torch.sh) and installs Debian's Chromium for the dashboard's
# browser test (scripts/chromium.sh), both beside the build, then runs every test (in two test hosts,
# below). Extra arguments go to one `dotnet test` (e.g. --filter).
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
run=(dotnet test ClusterDistill.sln -c Release --no-build --blame --logger "console;verbosity=normal")
if [ $# -gt 0 ]; then exec "${run[@]}" "$@"; fi
# The whole suite in two test hosts side by side: the tests that must run alone in-process (trait
# Host=alone: tests/Cluster.Tests/TorchFixture.cs) in one, everything else in the other, whose
# process lanes wait on failure detection and restarts much of the time (the first's output comes
# after). Then the few that time a thread against the clock (Host=quiet), with the machine to themselves.
alone_log=$(mktemp)
"${run[@]}" --filter "Host=alone" >"$alone_log" 2>&1 &
alone=$!
set +e
"${run[@]}" --filter "Host!=alone&Host!=quiet"
rc=$?
wait "$alone"
alone_rc=$?
echo "[test] the tests that run alone, in a test host of their own:"
cat "$alone_log"
rm -f "$alone_log"
echo "[test] the tests that time a thread, with the machine to themselves:"
"${run[@]}" --filter "Host=quiet"
quiet_rc=$?
set -e
for code in "$rc" "$alone_rc" "$quiet_rc"; do if [ "$code" -ne 0 ]; then exit "$code"; fi; done
exit 0
