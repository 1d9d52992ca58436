#!/usr/bin/env bash
# Builds the native runner (eapnet/export/runner, binary eapnet_runner) with CMake.
#
#   scripts/build_runner.sh [host|aarch64|all]     # default host
#
# host:    against the venv's ExecuTorch wheel, into build/runner-host/
# aarch64: cross compiled (eapnet/export/runner/aarch64-toolchain.cmake) against the aarch64 runtime that
#          scripts/setup_native.sh unpacks into .tools/executorch-aarch64-<version>/, into build/runner-aarch64/
# Incremental (CMake rebuilds what changed). Prints the path of each binary; on failure the end of the
# build log and exit 1; a missing cross compiler or aarch64 runtime: one line, exit 2.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=.venv/bin/python
target=${1:-host}
case "$target" in
  host | aarch64 | all) ;;
  *) echo "usage: scripts/build_runner.sh [host|aarch64|all]" >&2; exit 2 ;;
esac
[ -x "$PY" ] || { echo "error: .venv is missing: run scripts/setup_env.sh first" >&2; exit 2; }
command -v cmake >/dev/null || { echo "error: cmake is not installed (apt-get install cmake)" >&2; exit 2; }

build() {
  local kind=$1 et toolchain=()
  local dir="build/runner-$kind"
  if [ "$kind" = host ]; then
    # executorch is a namespace package (no __file__): the folder of its path holding the CMake package
    et=$("$PY" -c 'import executorch, os
print(next((p for p in executorch.__path__ if os.path.isfile(os.path.join(p, "share/cmake/executorch-config.cmake"))), ""))')
    [ -n "$et" ] || { echo "error: the venv's executorch has no CMake package (share/cmake): reinstall it" >&2; exit 2; }
  else
    local version
    version=$("$PY" -c 'import importlib.metadata as m; print(m.version("executorch"))')
    et="$ROOT/.tools/executorch-aarch64-$version/executorch"
    if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
      echo "error: no aarch64 cross compiler (aarch64-linux-gnu-g++): run scripts/setup_native.sh" >&2; exit 2
    fi
    if [ ! -f "$et/share/cmake/executorch-config.cmake" ]; then
      echo "error: no aarch64 ExecuTorch $version runtime in ${et#"$ROOT/"}: run scripts/setup_native.sh" >&2; exit 2
    fi
    toolchain=(-DCMAKE_TOOLCHAIN_FILE="$ROOT/eapnet/export/runner/aarch64-toolchain.cmake")
  fi
  # a build folder configured from another source folder (a checkout that moved, or the runner's sources that
  # moved within it) is stale: CMake refuses it, so it is configured afresh
  local cache="$dir/CMakeCache.txt"
  if [ -f "$cache" ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT/eapnet/export/runner" "$cache"; then
    rm -rf "$dir"
  fi
  mkdir -p "$dir"
  local log="$dir/build.log"
  if ! { cmake -S eapnet/export/runner -B "$dir" -DCMAKE_BUILD_TYPE=Release -Dexecutorch_DIR="$et/share/cmake" \
           "${toolchain[@]}" && cmake --build "$dir" -j2; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "error: building the $kind runner failed (full log: $dir/build.log)" >&2
    exit 1
  fi
  echo "$ROOT/$dir/eapnet_runner"
}

if [ "$target" = all ]; then
  build host
  build aarch64
else
  build "$target"
fi
