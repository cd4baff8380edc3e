#!/usr/bin/env bash
# Prepares the dependencies that the GPU machine lacks (it has nvcc, CMake, ninja and PyTorch, but no
# Debian -dev packages and no package registry): downloads the Debian packages of nlohmann-json (headers)
# and GoogleTest (sources) here and unpacks them into .gpudeps/ (git-ignored), which the device run
# carries (`carry: [".gpudeps"]`, about 2 MB) and scripts/gpu_check.sh builds against. Run it here, on
# a machine with apt, before the device run. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.gpudeps
if [ -f "$DEST/ok" ]; then
  echo "gpu_deps: $DEST is ready"
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST/debs" "$DEST/root"
(cd "$DEST/debs" && apt-get download nlohmann-json3-dev googletest)
for f in "$DEST"/debs/*.deb; do dpkg -x "$f" "$DEST/root"; done
test -f "$DEST/root/usr/include/nlohmann/json.hpp"
test -f "$DEST/root/usr/src/googletest/CMakeLists.txt"
rm -rf "$DEST/debs"
touch "$DEST/ok"
du -sh "$DEST"
