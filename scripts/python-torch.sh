#!/usr/bin/env bash
# Makes Debian's PyTorch (python3-torch 1.13, python3-torchvision 0.14) importable by /usr/bin/python3,
# installing the packages when missing (as root; PyPI is not needed). PyTorch is the reference the
# interop and numerics tests check against (tools/torch_interop.py, tools/torch_reference.py).
set -euo pipefail
py=/usr/bin/python3
if "$py" -c "import torch, torchvision" 2>/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "python-torch.sh: python3-torch is not installed and this is not root; apt-get install python3-torch python3-torchvision" >&2
  exit 1
fi
echo "[python-torch] installing python3-torch and python3-torchvision from Debian packages" >&2
# package lists fetched in the last hour (scripts/postgres.sh, say) are used as they are
[ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ] || apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-torch python3-torchvision >&2
"$py" -c "import torch, torchvision; print('[python-torch] PyTorch', torch.__version__, 'torchvision', torchvision.__version__)" >&2
