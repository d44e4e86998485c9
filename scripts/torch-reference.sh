#!/usr/bin/env bash
# The PyTorch side of the engine's reference tests: installs Debian's python3-torch when it is
# missing (scripts/python-torch.sh), then regenerates tests/Cluster.Tests/Fixtures/torch-reference.json
# with tools/torch_reference.py. With --check it writes nothing and says whether the committed
# fixture is what this PyTorch computes (bit for bit on the same build; other builds differ by ~1e-15).
set -euo pipefail
cd "$(dirname "$0")/.."
fixture=tests/Cluster.Tests/Fixtures/torch-reference.json
py=/usr/bin/python3

scripts/python-torch.sh

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
