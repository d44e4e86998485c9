#!/usr/bin/env bash
# The cost of watching a run: bench --cluster --part pipeline with its node serving the API, the
# dashboard open in headless Chromium in two tabs, the runs and a measured run's page (live from the event stream) and /metrics scraped every 5 s,
# as a Prometheus server would. Prints the bench's table; the scrapes go to $OUT/scrapes/.
#   scripts/bench-observed.sh [--quick]      (env: HTTP_PORT=8090, OUT=results/bench-observed)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${HTTP_PORT:-8090}
out=${OUT:-results/bench-observed}
mkdir -p "$out/scrapes"
shim=$(scripts/torch-native-env.sh)
if [ -n "$shim" ]; then export LD_LIBRARY_PATH="$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
export MKL_CBWR=${MKL_CBWR:-AUTO,STRICT}
export CLUSTERDISTILL_TOKEN=${CLUSTERDISTILL_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
chromium=$(scripts/chromium.sh)
seed=src/Cluster.Seed/bin/Release/net10.0/Cluster.Seed
[ -x "$seed" ] || dotnet build ClusterDistill.sln -c Release -v quiet -nologo >/dev/null
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
"$seed" bench --cluster --part pipeline --http-port "$port" --out "$out/bench-cluster.json" "$@" 2>&1 | tee "$out/bench.log" &
bench=$!
until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do
  kill -0 "$bench" 2>/dev/null || { echo "bench-observed: the bench ended before its node was ready" >&2; exit 1; }
  sleep 1
done
"$chromium" --headless=new --no-sandbox --disable-gpu --user-data-dir="$(mktemp -d)" --remote-debugging-port=0 \
  "http://127.0.0.1:$port/#token=$CLUSTERDISTILL_TOKEN" "http://127.0.0.1:$port/#token=$CLUSTERDISTILL_TOKEN&view=/run/bench-4" >"$out/chromium.log" 2>&1 &
pids+=($!)
( n=0; while sleep 5; do n=$((n + 1)); curl -sf "http://127.0.0.1:$port/metrics" >"$out/scrapes/$(printf %04d $n).txt" || true; done ) &
pids+=($!)
wait "$bench"
echo "[bench-observed] $(ls "$out/scrapes" | wc -l) scrapes in $out/scrapes; the dashboard was open throughout"
