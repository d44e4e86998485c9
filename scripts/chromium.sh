#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser test (driven headless by Playwright for .NET, which
# is told to use this browser instead of downloading its own), installed when missing (as root).
# Prints the browser's path.
set -euo pipefail
for b in /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -x "$b" ]; then echo "$b"; exit 0; fi
done
if [ "$(id -u)" != 0 ]; then
  echo "chromium.sh: chromium is not installed and this is not root; apt-get install chromium fonts-liberation" >&2
  exit 1
fi
echo "[chromium] installing chromium from Debian packages" >&2
# package lists fetched in the last hour (scripts/postgres.sh, say) are used as they are
[ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ] || apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2
echo /usr/bin/chromium
