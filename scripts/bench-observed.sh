#!/usr/bin/env bash
# The cost of watching a run: bench --cluster --part pipeline with its node serving the API, the
# dashboard open in headless Chromium in two tabs, the runs and a measured run's page (live from the event stream) and /metrics scraped every 5 s,
# as a Prometheus server would. Prints the bench's table; the scrapes go to $OUT/scrapes/.
#   scripts/bench-observed.sh [--quick]      (env: HTTP_PORT=8090, DEVTOOLS_PORT=9223, OUT=results/bench-observed)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${HTTP_PORT:-8090}
devtools=${DEVTOOLS_PORT:-9223}
out=${OUT:-results/bench-observed}
rm -rf "$out/scrapes" && mkdir -p "$out/scrapes"
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
# headless Chromium opens one page from its command line; the second tab is opened through DevTools
"$chromium" --headless=new --no-sandbox --disable-gpu --user-data-dir="$(mktemp -d)" --remote-debugging-port="$devtools" \
  "http://127.0.0.1:$port/#token=$CLUSTERDISTILL_TOKEN" >"$out/chromium.log" 2>&1 &
browser=$!
pids+=($browser)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$devtools/json/version" >/dev/null && break; sleep 0.2; done
curl -sf -X PUT "http://127.0.0.1:$devtools/json/new?http://127.0.0.1:$port/%23token=$CLUSTERDISTILL_TOKEN%26view=/run/bench-4" >/dev/null \
  || { echo "bench-observed: Chromium did not open the second tab (see $out/chromium.log)" >&2; exit 1; }
( n=0; while sleep 5; do n=$((n + 1)); curl -sf "http://127.0.0.1:$port/metrics" >"$out/scrapes/$(printf %04d $n).txt" || true; done ) &
pids+=($!)
wait "$bench"
# the dashboard was watching if the browser is still up and the node counted both pages' event streams in
# every scrape of it but one at most (the last can catch the node stopping its HTTP server)
kill -0 "$browser" 2>/dev/null || { echo "bench-observed: Chromium exited during the bench (see $out/chromium.log): the figures above were not observed" >&2; exit 1; }
# (the tabs' URLs carry the token: kept out of the output)
curl -sf "http://127.0.0.1:$devtools/json/list" | grep -o '"url": *"[^"]*"' | sed 's/#token=[^&"]*/#token=.../' >"$out/tabs.txt" && echo "[bench-observed] tabs open: $(tr '\n' ' ' <"$out/tabs.txt")"
# (a scrape after the node stopped, as the bench ends, is an empty file)
scrapes=$(find "$out/scrapes" -name '*.txt' -size +0 | wc -l)
watched=$(cat "$out"/scrapes/*.txt | grep -c '^clusterdistill_http_event_streams 2$' || true)
echo "[bench-observed] $scrapes scrapes of the running node in $out/scrapes; it served the dashboard's 2 event streams in $watched of them"
[ "$scrapes" -gt 0 ] && [ "$watched" -ge $((scrapes - 1)) ] || { echo "bench-observed: the dashboard's two pages were not streaming throughout" >&2; exit 1; }
