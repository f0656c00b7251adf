#!/usr/bin/env bash
# Set everything up (virtual environment, torch, fastweights[dev]) and run the main job on its
# embedded default. Safe to run again: finished steps are skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
"$VENV/bin/fastweights" demo "$@"
