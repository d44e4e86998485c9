#!/usr/bin/env bash
# Makes TorchSharp 0.107 loadable on hosts whose libstdc++ predates GCC 13 (Debian 12).
#
# libLibTorchSharp.so needs one GLIBCXX_3.4.32 symbol, std::ios_base_library_init(). Where the
# system libstdc++ lacks it, this builds (once, cached) a small libstdc++.so.6 that defines that
# symbol and forwards everything else to a renamed copy of the system library, then prints the
# folder to put first on LD_LIBRARY_PATH. Where nothing is needed it prints nothing.
# The variable must be set before the process starts: the .NET host loads libstdc++ first.
#
#   dir=$(scripts/torch-native-env.sh [cache-dir])
set -euo pipefail
sys=$(readlink -f "$(gcc -print-file-name=libstdc++.so.6 2>/dev/null || true)" 2>/dev/null || true)
[ -f "$sys" ] || sys=$(readlink -f /usr/lib/x86_64-linux-gnu/libstdc++.so.6 2>/dev/null || true)
[ -f "$sys" ] || exit 0                                    # no system libstdc++ found: nothing to fix
if grep -q 'GLIBCXX_3\.4\.32' "$sys" 2>/dev/null; then exit 0; fi   # new enough already

out=${1:-${CLUSTERDISTILL_NATIVE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterdistill/native}}
if [ -f "$out/libstdc++.so.6" ] && [ "$out/libstdc++.so.6" -nt "$sys" ]; then echo "$out"; exit 0; fi

need=()
command -v gcc >/dev/null || need+=(gcc g++)
command -v patchelf >/dev/null || need+=(patchelf)
command -v objdump >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "torch-native-env: installing ${need[*]} (needed to make TorchSharp load on this libstdc++)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >&2
  else
    echo "torch-native-env: TorchSharp needs GLIBCXX_3.4.32, which $sys lacks; install ${need[*]} and run again" >&2
    exit 1
  fi
fi

mkdir -p "$out"; work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp "$sys" "$out/libstdc++-host.so"
patchelf --set-soname libstdc++-host.so "$out/libstdc++-host.so"
# Version script: every version node of the host library (so that binaries linked against them
# still resolve here) plus the one GCC 13 node, which carries the missing function.
{
  echo "GLIBCXX_3.4.32 { global: _ZSt21ios_base_library_initv; };"
  objdump -p "$sys" | awk '/Version definitions/{d=1;next} /Version References/{d=0} d && $4 ~ /^(GLIBCXX|CXXABI)_/ {print $4 " { };"}' | sort -u
} > "$work/versions.map"
cat > "$work/init.cc" <<'CC'
#include <ios>
// GCC 13 emits calls to this from every unit including <iostream>; the older library sets the
// standard streams up on its own, so constructing one Init object is all that is left to do.
namespace std { void ios_base_library_init() { static ios_base::Init once; } }
CC
gcc -shared -fPIC -O2 -x c++ "$work/init.cc" -o "$work/libstdc++.so.6" \
  -Wl,--version-script="$work/versions.map" -Wl,-soname,libstdc++.so.6 \
  -nodefaultlibs -L"$out" -l:libstdc++-host.so -lc -lgcc_s -Wl,-rpath,'$ORIGIN'
mv "$work/libstdc++.so.6" "$out/libstdc++.so.6"
echo "$out"
