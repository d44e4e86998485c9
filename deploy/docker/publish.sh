#!/usr/bin/env bash
# The published tree every image copies: Cluster.Seed and Cluster.GpuNode in one folder (they share
# every assembly), framework-dependent, with the linux-x64 natives only. The Dockerfiles' build
# stage runs this, and so does scripts/check-image.sh, so the tree that is checked is the tree that
# ships. No runtime identifier and no change of build properties, so that publish reuses the
# Release build in bin/ rather than rebuilding it with other outputs (the tests run from there);
# PUBLISH_NO_BUILD=1 (scripts/check-image.sh) publishes that build without building at all.
#
#   deploy/docker/publish.sh OUT [cpu|cuda]
#
# cuda: the same tree without TorchSharp's CPU libtorch; the GPU image brings PyTorch's own.
set -euo pipefail
out=${1:?usage: publish.sh OUT [cpu|cuda]}
torch=${2:-cpu}
cd "$(dirname "$0")/../.."
rm -rf "$out"
for p in Cluster.Seed Cluster.GpuNode; do
  dotnet publish "src/$p/$p.csproj" -c Release --self-contained false ${PUBLISH_NO_BUILD:+--no-build} -nologo -v quiet -o "$out"
done
# other platforms' natives (SQLite, SkiaSharp, libtorch for macOS and Windows) are dead weight here
find "$out/runtimes" -mindepth 1 -maxdepth 1 -type d ! -name linux-x64 -exec rm -rf {} +
native="$out/runtimes/linux-x64/native"
# libtorch's test and Python libraries, which TorchSharp never loads
rm -f "$native"/{libbackend_with_compiler,libjitbackend_test,libnnapi_backend,libaoti_custom_ops,libtorchbind_test,libtorch_python}.so
if [ "$torch" = cuda ]; then
  # TorchSharp's glue stays, beside the assemblies, where it looks once runtimes/ has no libtorch;
  # it loads the libtorch on LD_LIBRARY_PATH
  find "$native" -type f \( -name 'libtorch*.so*' -o -name 'libc10*.so*' -o -name 'libgomp*.so*' -o -name 'libshm.so' \) -delete
  mv "$native/libLibTorchSharp.so" "$out/"
fi
cp deploy/docker/entrypoint.sh "$out/entrypoint.sh"
chmod 0755 "$out/entrypoint.sh"
echo "published $(du -sh "$out" | cut -f1) into $out ($torch)"
