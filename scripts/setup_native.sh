#!/usr/bin/env bash
# Tools for the native runner beyond the Python environment: the aarch64 cross compiler, a QEMU user-mode
# emulator that computes SME correctly, and the aarch64 build of the ExecuTorch runtime the runner links.
# Idempotent: each step is skipped when its result is already there. Everything lands in .tools/ (ignored).
#
#   scripts/setup_native.sh          # cross compiler + QEMU + aarch64 runtime
#
# Needs root for apt-get (as on every machine of this project) and the machine's configured Debian mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.tools
mkdir -p "$TOOLS"
PY=.venv/bin/python
[ -x "$PY" ] || { echo "error: .venv is missing: run scripts/setup_env.sh first" >&2; exit 2; }

apt_ready=0
apt_update() { if [ "$apt_ready" = 0 ]; then apt-get update -qq; apt_ready=1; fi; }

# 1. The cross compiler (Debian's; its sysroot /usr/aarch64-linux-gnu also serves QEMU as -L).
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
  echo "setup_native: installing g++-aarch64-linux-gnu"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null
fi

# 2. QEMU user mode, 10.x from Debian 13 (one statically linked binary). Debian 12's QEMU 7.2 computes SME
#    instructions wrongly (-cpu max gives wrong int8 results), so its package is only the fallback, and then
#    the runner's callers run `max` as `max,sme=off` (eapnet.export.native reads the version).
QEMU="$TOOLS/qemu/qemu-aarch64"
if [ ! -x "$QEMU" ]; then
  echo "setup_native: fetching qemu-user from Debian 13 (trixie)"
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  ok=0
  if [ -n "$uri" ]; then
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" > "$tmp/sources.list"
    O=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$tmp/lists"
       -o "Dir::Cache=$tmp/cache" -o APT::Architectures::=amd64 -o APT::Sandbox::User=root)
    if apt-get "${O[@]}" update -qq && (cd "$tmp" && apt-get "${O[@]}" download qemu-user >/dev/null); then
      dpkg-deb -x "$tmp"/qemu-user_*.deb "$tmp/x"
      mkdir -p "$TOOLS/qemu"
      cp "$tmp/x/usr/bin/qemu-aarch64" "$QEMU.tmp" && mv "$QEMU.tmp" "$QEMU"
      ok=1
    fi
  fi
  if [ "$ok" = 0 ]; then
    echo "setup_native: Debian 13's qemu-user could not be had; installing this release's qemu-user (SME not covered)" >&2
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null
    mkdir -p "$TOOLS/qemu"
    ln -sf "$(command -v qemu-aarch64)" "$QEMU"
  fi
fi
"$QEMU" --version | head -1

# 3. The aarch64 build of the ExecuTorch wheel the venv holds: its lib/, include/ and share/cmake.
ET_VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("executorch"))')
ET_ARM="$TOOLS/executorch-aarch64-$ET_VERSION"
if [ ! -f "$ET_ARM/executorch/share/cmake/executorch-config.cmake" ]; then
  echo "setup_native: fetching the aarch64 wheel of executorch $ET_VERSION"
  wheels="$TOOLS/wheels"
  mkdir -p "$wheels"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
      --python-version 3.11 -d "$wheels" "executorch==$ET_VERSION"
  whl=$(ls "$wheels"/executorch-"$ET_VERSION"-*aarch64*.whl | head -1)
  rm -rf "$ET_ARM.tmp"
  mkdir -p "$ET_ARM.tmp"
  "$PY" - "$whl" "$ET_ARM.tmp" <<'PY'
import sys, zipfile
whl, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    z.extractall(dest, [n for n in z.namelist() if n.split("/")[1:2] and n.split("/")[1] in ("lib", "include", "share")
                        and n.startswith("executorch/")])
PY
  rm -rf "$ET_ARM"
  mv "$ET_ARM.tmp" "$ET_ARM"
fi
echo "setup_native: aarch64 runtime in $ET_ARM/executorch"
