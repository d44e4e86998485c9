#!/usr/bin/env bash
# The PyTorch side of the engine's reference tests: installs Debian's python3-torch when it is
# missing (as root; PyPI is not needed), then regenerates tests/Cluster.Tests/Fixtures/torch-reference.json
# with tools/torch_reference.py. With --check it writes nothing and says whether the committed
# fixture is what this PyTorch computes (bit for bit on the same build; other builds differ by ~1e-15).
set -euo pipefail
cd "$(dirname "$0")/.."
fixture=tests/Cluster.Tests/Fixtures/torch-reference.json
py=/usr/bin/python3

if ! "$py" -c "import torch" 2>/dev/null; then
  if [ "$(id -u)" != 0 ]; then echo "torch-reference.sh: python3-torch is not installed and this is not root; apt-get install python3-torch" >&2; exit 1; fi
  echo "[torch-reference] installing python3-torch from Debian packages" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch >&2
fi

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
"$py" tools/torch_reference.py > "$tmp"
if [ "${1:-}" = "--check" ]; then
  if cmp -s "$tmp" "$fixture"; then echo "[torch-reference] $fixture is what this PyTorch computes"; exit 0; fi
  echo "[torch-reference] $fixture differs from what this PyTorch computes" >&2; exit 1
fi
mv "$tmp" "$fixture"
trap - EXIT
echo "[torch-reference] wrote $fixture ($(wc -c < "$fixture") bytes)"
