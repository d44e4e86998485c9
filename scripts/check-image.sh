#!/usr/bin/env bash
# Checks the container images as far as a machine without a container engine can (deploy/k8s/README.md):
#   1. lints every Dockerfile (dockerfile-utils and dockerfilelint, from npm, cached);
#   2. builds the published tree exactly as the Dockerfiles' build stage does (deploy/docker/publish.sh);
#   3. runs the image's entrypoint on it as a pod would: as uid 65534, on a read-only root
#      filesystem (a private mount namespace), with writable /store and /tmp volumes and a
#      read-only data volume, the image's environment, and a PATH that has neither a compiler
#      nor npm. A seed and a CPU node form a cluster and report ready; a short run submitted
#      through the API trains on the data volume's MNIST.
# Needs root (for the mount namespace) and a PostgreSQL server: $CLUSTERDISTILL_PG or scripts/postgres.sh.
#
#   scripts/check-image.sh [WORK-DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(readlink -f "${1:-$(mktemp -d)}"); mkdir -p "$work"
log() { echo "[check-image] $*"; }

# 1. lint
tools=${XDG_CACHE_HOME:-$HOME/.cache}/clusterdistill/tools
if [ ! -x "$tools/node_modules/.bin/dockerfilelint" ] || [ ! -x "$tools/node_modules/.bin/dockerfile-utils" ]; then
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
  mkdir -p "$tools" && npm install --silent --no-audit --no-fund --prefix "$tools" dockerfile-utils@0.16.3 dockerfilelint@1.8.0 >/dev/null
fi
for f in deploy/docker/Dockerfile*; do
  "$tools/node_modules/.bin/dockerfile-utils" lint "$f" || { log "FAIL: dockerfile-utils lint $f"; exit 1; }
  "$tools/node_modules/.bin/dockerfilelint" "$f" >"$work/lint.txt" || { cat "$work/lint.txt"; log "FAIL: dockerfilelint $f"; exit 1; }
  log "lint $f: clean"
done

# 2. the published tree
app="$work/app"
started=$(date +%s)
# the Release build the caller made (scripts/test.sh): its bin/ folders are the tests' programs too
PUBLISH_NO_BUILD=1 deploy/docker/publish.sh "$app" cpu >"$work/publish.log" 2>&1 || { tail -30 "$work/publish.log"; exit 1; }
log "$(tail -1 "$work/publish.log") in $(( $(date +%s) - started )) s"
chmod -R a+rX "$app"
(cd "$app" && find . -type f -exec sha256sum {} + | sort -k2) >"$work/tree.before"

# 3. volumes: MNIST put on the data volume beforehand, as the data image's init container does
rm -rf "$work/volumes"
mkdir -p "$work/volumes/store" "$work/volumes/tmp" "$work/volumes/data/mnist" "$work/bin"
mnist=$(MKL_CBWR=AUTO,STRICT dotnet "$app/Cluster.Seed.dll" data fetch mnist | sed -n 's/^mnist: //p')
cp "$mnist"/*-ubyte "$work/volumes/data/mnist/"
chown -R 65534:65534 "$work/volumes/store" "$work/volumes/tmp"
# the pod's PATH: the shell, dirname and dotnet, nothing else
for t in sh dirname; do ln -sf "$(command -v $t)" "$work/bin/$t"; done
ln -sf "$(readlink -f "$(command -v dotnet)")" "$work/bin/dotnet"
# Ubuntu 24.04's libstdc++ (the base image's) has GLIBCXX_3.4.32; this Debian 12 host's does not, so
# the shim is built here, before and outside the pod, and stands in for the base image's library
native=$(scripts/torch-native-env.sh "$work/native")
pg=${CLUSTERDISTILL_PG:-$(scripts/postgres.sh)}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
akka=$(free_port); api=$(free_port); nodehttp=$(free_port)
db="cd_image_$(date +%s)_$$"
kv() { echo "$pg" | tr ';' '\n' | sed -n "s/^$1=//Ip" | head -1; }
sql() { PGPASSWORD=$(kv Password) psql -h "$(kv Host)" -p "$(kv Port)" -U "$(kv Username)" -d postgres -qc "$1" >/dev/null; }
sql "CREATE DATABASE $db"
conn="postgres:$(echo "$pg" | sed "s/Database=[^;]*/Database=$db/")"
token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$work/pod.sh" <<POD
#!/bin/sh
# inside the private mount namespace: the volumes are their own mounts, then the root goes read-only
set -e
for v in store tmp; do mount --bind "$work/volumes/\$v" "$work/volumes/\$v"; done
mount --bind "$work/volumes/data" "$work/volumes/data"
mount -o remount,bind,ro "$work/volumes/data"
mount -o remount,bind,ro /
exec setpriv --reuid=65534 --regid=65534 --clear-groups env -i \
  PATH="$work/bin" HOME="$work/volumes/tmp" TMPDIR="$work/volumes/tmp" LD_LIBRARY_PATH="$native" \
  DOTNET_ROOT="$(dirname "$(readlink -f "$(command -v dotnet)")")" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_EnableDiagnostics=0 \
  MKL_CBWR=AUTO,STRICT CLUSTERDISTILL_NATIVE_BUILD=off CLUSTERDISTILL_DATA_FETCH=off \
  CLUSTERDISTILL_DATA="$work/volumes/data" CLUSTERDISTILL_TEACHERS="$work/volumes/store/teachers" \
  CLUSTERDISTILL_DB="$conn" CLUSTERDISTILL_TOKEN="$token" \
  "$app/entrypoint.sh" "\$@"
POD
chmod 0755 "$work/pod.sh"
cleanup() {
  for p in ${node_pid:-} ${seed_pid:-}; do kill "$p" 2>/dev/null || true; done
  sleep 1; for p in ${node_pid:-} ${seed_pid:-}; do kill -9 "$p" 2>/dev/null || true; done
  sql "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
}
trap cleanup EXIT
store="$work/volumes/store"
started=$(date +%s)
unshare --mount --propagation private "$work/pod.sh" seed serve --host 127.0.0.1 --port "$akka" --seeds "127.0.0.1:$akka" --http-port "$api" \
  --store "$store" --runs-dir "$store/runs" >"$work/seed.log" 2>&1 & seed_pid=$!
unshare --mount --propagation private "$work/pod.sh" node join --host 127.0.0.1 --port 0 --seeds "127.0.0.1:$akka" --http-port "$nodehttp" \
  --store "$store" --runs-dir "$store/runs" --slots 1 >"$work/node.log" 2>&1 & node_pid=$!
ready() { curl -fs -o /dev/null "http://127.0.0.1:$1/health/ready"; }
for _ in $(seq 1 120); do
  if ready "$api" && ready "$nodehttp"; then break; fi
  kill -0 "$seed_pid" 2>/dev/null && kill -0 "$node_pid" 2>/dev/null || break
  sleep 1
done
ready "$api" && ready "$nodehttp" || { tail -20 "$work/seed.log" "$work/node.log"; log "FAIL: not ready"; exit 1; }
log "seed and node ready in $(( $(date +%s) - started )) s, as uid 65534 on a read-only root"
curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$api/api/nodes" >"$work/nodes.json"
grep -q '"gpu"' "$work/nodes.json" || { cat "$work/nodes.json"; log "FAIL: the node is not in /api/nodes"; exit 1; }

cat >"$work/spec.yaml" <<'SPEC'
name: image-check
method: supervised
seed: 3
data: {name: mnist, image_size: 32, train_limit: 2048}
student:
  arch: lenet5
  train: {epochs: 1, batch_size: 64, optimizer: adam, lr: 0.002, eval_every: 32}
SPEC
curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: text/plain' --data-binary @"$work/spec.yaml" \
  "http://127.0.0.1:$api/api/runs?runId=image-check" >"$work/submit.json" || { cat "$work/submit.json"; log "FAIL: submit"; exit 1; }
for _ in $(seq 1 180); do
  curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$api/api/runs/image-check" >"$work/run.json" || true
  grep -Eq '"state": ?"(completed|failed|cancelled)"' "$work/run.json" && break
  sleep 1
done
grep -Eq '"state": ?"completed"' "$work/run.json" || { cat "$work/run.json"; tail -20 "$work/node.log"; log "FAIL: the run did not complete"; exit 1; }
acc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["student_accuracy"])' "$store/runs/image-check/result.json")
log "the run trained on the data volume: student $acc% on MNIST's test set"

hwm() { awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$1/status"; }
log "peak resident memory: seed $(hwm "$seed_pid"), node $(hwm "$node_pid")"
# one pod after the other, as a rolling restart or a drain stops them (a node leaving hands its
# shards over through the seed, which must still be up)
kill -TERM "$node_pid"
node_rc=0; wait "$node_pid" || node_rc=$?
kill -TERM "$seed_pid"
seed_rc=0; wait "$seed_pid" || seed_rc=$?
node_pid=; seed_pid=
[ "$node_rc" = 0 ] && [ "$seed_rc" = 0 ] || { log "FAIL: SIGTERM exit codes node $node_rc seed $seed_rc"; exit 1; }
log "SIGTERM: both left the cluster and exited 0"
# nothing compiled, installed or downloaded: the logs, the tree and the volumes say so
if grep -Eai 'torch-native-env|installing|apt-get|npm|gcc|downloading' "$work/seed.log" "$work/node.log"; then log "FAIL: the pod compiled, installed or downloaded"; exit 1; fi
(cd "$app" && find . -type f -exec sha256sum {} + | sort -k2) >"$work/tree.after"
cmp -s "$work/tree.before" "$work/tree.after" || { diff "$work/tree.before" "$work/tree.after" | head; log "FAIL: the published tree changed"; exit 1; }
[ -z "$(ls -A "$work/volumes/tmp" | grep -v '^\.clusterdistill$' || true)" ] || ls -la "$work/volumes/tmp"
log "ok: nothing compiled, installed or downloaded; the published tree unchanged"
