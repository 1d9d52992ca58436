#!/usr/bin/env bash
# Set everything up (first call only) and run the main job on the embedded defaults: compress the shipped
# standard model to 100 GMAccs with the shipped calibration set (17 to 30 minutes on 2 CPU cores,
# reports/main-job/).
# Extra arguments go to compress/qat.py, e.g. ./run.sh --target-maccs 80G; with --arm the aarch64 tools are
# set up too (scripts/setup_native.sh) and every .pte is also checked on four ARM CPU families under QEMU.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh
if [[ " $* " == *" --arm "* ]]; then
    scripts/setup_native.sh
fi
if [[ " $* " == *" --target-maccs"* ]]; then
    exec .venv/bin/python compress/qat.py "$@"
fi
exec .venv/bin/python compress/qat.py --target-maccs 100G "$@"
