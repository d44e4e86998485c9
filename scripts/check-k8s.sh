#!/usr/bin/env bash
# Renders every kustomize overlay of deploy/k8s (and the submit Job) with kubectl and validates each
# object offline against the Kubernetes schemas (deploy/k8s/validate.mjs: kubernetes-models, and
# tsc for unknown fields). The rendered files stay in WORK-DIR for the policy test.
#
#   scripts/check-k8s.sh WORK-DIR
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mkdir -p "${1:?usage: check-k8s.sh WORK-DIR}" && cd "$1" && pwd)
command -v kubectl >/dev/null || { echo "check-k8s: kubectl is needed (it renders the kustomize overlays)" >&2; exit 1; }
tools=${XDG_CACHE_HOME:-$HOME/.cache}/clusterdistill/k8s-tools
if [ ! -f "$tools/node_modules/typescript/bin/tsc" ] || [ ! -d "$tools/node_modules/kubernetes-models" ] || [ ! -d "$tools/node_modules/js-yaml" ]; then
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
  mkdir -p "$tools" && echo '{"private": true}' >"$tools/package.json"
  npm install --silent --no-audit --no-fund --prefix "$tools" kubernetes-models@5.1.0 js-yaml@4.1.0 typescript@5.9.3 >/dev/null
fi
rendered=()
for k in overlays/dev overlays/gpu overlays/gpu-runtimeclass jobs; do
  out="$work/$(echo "$k" | tr / -).yaml"
  kubectl kustomize "deploy/k8s/$k" >"$out"
  echo "rendered deploy/k8s/$k: $(grep -c '^kind:' "$out") objects"
  rendered+=("$out")
done
K8S_TOOLS="$tools" node deploy/k8s/validate.mjs "$work/tsc" "${rendered[@]}"
