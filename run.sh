#!/usr/bin/env bash
# Set everything up (first call only) and run the main job on the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh
exec .venv/bin/python -m eapnet.smoke "$@"
