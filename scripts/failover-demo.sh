#!/usr/bin/env bash
# Failover demo, with real processes on 127.0.0.1: one seed and two GPU nodes sharing a PostgreSQL
# journal (scripts/postgres.sh) and a blob store. It submits a DAFL run, kill -9s the node holding
# the student in the middle, checks that the student comes back on the survivor from its last
# checkpoint and the run carries on; then kill -9s every process, starts them again and checks
# that the run resumes rather than restarts. The final accuracy is compared with an uninterrupted
# run of the same spec and seed. Prints a summary; exits non-zero if any check fails.
#   scripts/failover-demo.sh [spec]     (env: WORK=dir, PORT_BASE=4153, HTTP_PORT=4203, SKIP_BUILD=1, SKIP_STATUS=1)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
spec=$(realpath "${1:-specs/failover-demo.yaml}")
work=${WORK:-$(mktemp -d /tmp/clusterdistill-failover.XXXXXX)}
base=${PORT_BASE:-4153}
mkdir -p "$work"
log() { echo "[demo $(date +%H:%M:%S)] $*"; }
# the interpreter itself, not a version manager's shim: status.json is read twice a second, and a
# shim (pyenv's is two bash scripts) costs more CPU than the read
py=$(python3 -c 'import sys; print(sys.executable)')

shim=$(scripts/torch-native-env.sh)
if [ -n "$shim" ]; then export LD_LIBRARY_PATH="$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
pg=$(scripts/postgres.sh)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgport=$(sed -E 's/.*Port=([0-9]+).*/\1/' <<<"$pg")
dbname="cd_failover_$(date +%s)_$$"
"$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres "$dbname"
db="postgres:${pg/Database=clusterdistill/Database=$dbname}"

[ "${SKIP_BUILD:-0}" = 1 ] || dotnet build ClusterDistill.sln -c Release -v quiet -nologo >/dev/null
seed_bin=$repo/src/Cluster.Seed/bin/Release/net10.0/Cluster.Seed
gpu_bin=$repo/src/Cluster.GpuNode/bin/Release/net10.0/Cluster.GpuNode
common=(--db "$db" --store "$work/store" --runs-dir "$work/runs")
http=${HTTP_PORT:-$((base + 50))}   # the seed's API
export CLUSTERDISTILL_TOKEN=${CLUSTERDISTILL_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}

declare -A pids
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then   # the nodes' warnings and errors, so that a failure says why
    for f in "$work"/seed.log "$work"/gpu*.log; do
      [ -f "$f" ] && { echo "--- $f"; grep -E '\[(WARNING|ERROR)\]' "$f" | cut -c1-300 | tail -15; }
    done
  fi
  "$pgbin/dropdb" -h 127.0.0.1 -p "$pgport" -U postgres --if-exists "$dbname" 2>/dev/null || true
}
trap cleanup EXIT
trap "exit 143" TERM INT

start_seed() { "$seed_bin" serve --port "$base" --http-port "$http" "${common[@]}" >>"$work/seed.log" 2>&1 & pids[seed]=$!; disown; }
# the seed's API answers ready (joined, its shard regions registered): a loaded machine can take
# longer than any fixed sleep to start it, and a submit before that is refused
seed_ready() {
  local deadline=$((SECONDS + 90))
  until "$py" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$http/health/ready', timeout=2)" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "the seed's API was not ready within 90 s"; exit 1; }
    sleep 0.5
  done
}
start_gpu() { "$gpu_bin" join --seeds "127.0.0.1:$base" --port "$((base + $1))" "${common[@]}" >>"$work/gpu$1.log" 2>&1 & pids[gpu$1]=$!; disown; }
# the step a student entity restored, from the node logs ("student ready at step N"), after a given log line count
# (log lines start with the UTC time, so sorting them orders both nodes' lines in time)
ready_steps() { grep -h 'student/0: student ready at step' "$work"/gpu*.log | sort | grep -Eo 'ready at step [0-9]+' | grep -Eo '[0-9]+$' || true; }

# status.json (written by the coordinator) -> "state step total accuracy node"
status() {
  "$py" - "$work/runs/demo/status.json" <<'PY' 2>/dev/null || echo "none 0 0 - -"
import json, sys
s = json.load(open(sys.argv[1]))
print(s["state"], s["step"], s["total_steps"], s["student_accuracy"] if s["student_accuracy"] is not None else "-", s["student_node"] or "-")
PY
}
wait_for() {   # wait_for <seconds> <condition on $state $step $total>
  local deadline=$((SECONDS + $1)) seen="" line; shift
  while [ $SECONDS -lt $deadline ]; do
    read -r state step total acc node < <(status)
    if eval "$1"; then return 0; fi
    line="$state $step"; [[ "$seen" == *"$line;" ]] || seen="$seen $line;"
    sleep 0.5
  done
  log "timed out waiting for: $1 (state $state, step $step; seen:${seen: -400})"; return 1
}

log "work dir $work; journal database $dbname"

start_seed; seed_ready; start_gpu 1; start_gpu 2
"$seed_bin" submit "$spec" --server "http://127.0.0.1:$http" --run-id demo >"$work/submit.log" 2>&1 ||
  { log "submit failed: $(tail -5 "$work/submit.log")"; exit 1; }
log "submitted run 'demo'"
wait_for 240 '[ "$state" = training ] && [ "$step" -ge $((total * 3 / 10)) ]'
victim_port=${node##*:}
victim=gpu$((victim_port - base))
killed_at=$step   # as status.json shows it: it trails the student by a few steps, so a checkpoint just after it can be what comes back
readies_before=$(ready_steps | wc -l)
kill -9 "${pids[$victim]}"; unset "pids[$victim]"
t_kill=$SECONDS
log "kill -9 $victim (port $victim_port, holds the student) at step $killed_at"
# the uninterrupted reference run (same spec and seed; the teacher is cached by now) uses the
# cluster's wait for failure detection
log "uninterrupted reference run started (same spec and seed)"
"$seed_bin" run "$spec" --engine --runs-dir "$work/reference" --run-id reference >"$work/reference.log" 2>&1 &
pids[reference]=$!

# the student must come back on the survivor and pass the step where it was killed
while :; do
  read -r state step total acc node < <(status)
  if [ "${node##*:}" != "$victim_port" ] && [ "$step" -gt "$killed_at" ]; then break; fi
  [ $((SECONDS - t_kill)) -gt 180 ] && { log "student did not come back within 180 s"; exit 1; }
  sleep 0.5
done
failover_s=$((SECONDS - t_kill))
min_after=$(ready_steps | tail -n +$((readies_before + 1)) | head -1)
log "student came back on $node from its checkpoint at step $min_after, passed step $killed_at after ${failover_s} s"

wait_for 240 '[ "$step" -ge $((total * 6 / 10)) ]'
full_kill_at=$step
log "kill -9 every process at step $full_kill_at"
readies_before=$(ready_steps | wc -l)
for p in "${!pids[@]}"; do [ "$p" = reference ] && continue; kill -9 "${pids[$p]}" 2>/dev/null || true; unset "pids[$p]"; done
sleep 1
start_seed; seed_ready; start_gpu 1; start_gpu 2
wait_for 400 '[ "$state" = completed ] || [ "$state" = failed ]'
first_after_restart=$(ready_steps | tail -n +$((readies_before + 1)) | head -1)
log "after the full restart the student came back from step ${first_after_restart:-?}; the run is $state"
[ "${SKIP_STATUS:-0}" = 1 ] || "$seed_bin" status --server "http://127.0.0.1:$http" --run-id demo 2>/dev/null | grep '^\[demo\]' | tee "$work/status.txt" || true

wait "${pids[reference]}" || { log "the reference run failed: $(tail -3 "$work/reference.log")"; exit 1; }
unset "pids[reference]"
ref=$("$py" -c "import json;print(json.load(open('$work/reference/reference/result.json'))['student_accuracy'])")
log "reference student accuracy: $ref%"

final=$("$py" -c "import json;print(json.load(open('$work/runs/demo/result.json'))['student_accuracy'])")
interval=$(grep -E '^\s+checkpoint_every:' "$spec" | head -1 | grep -Eo '[0-9]+')
ok=1
check() { if eval "$2"; then log "PASS $1"; else log "FAIL $1"; ok=0; fi; }
check "run completed" '[ "$state" = completed ]'
check "student came back on the survivor after kill -9 (${failover_s} s)" '[ -n "$min_after" ]'
check "step went back at most one checkpoint interval ($interval): killed at $killed_at, resumed from $min_after" \
  '[ $((killed_at - min_after)) -le "$interval" ]'
check "full restart resumed from step ${first_after_restart:-?} (all killed at $full_kill_at), did not start over" \
  '[ -n "$first_after_restart" ] && [ "$first_after_restart" -ge $((full_kill_at - interval)) ] && [ "$first_after_restart" -gt 0 ]'
check "final accuracy $final% within 0.5 pt of the uninterrupted $ref%" \
  "\"$py\" -c \"import sys; sys.exit(0 if abs($final - $ref) <= 0.5 else 1)\""
echo "failover-demo: killed_at=$killed_at min_after=$min_after failover_s=$failover_s full_kill_at=$full_kill_at resumed_at=$first_after_restart final=$final reference=$ref ok=$ok"
[ "$ok" = 1 ]
