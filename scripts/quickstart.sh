#!/usr/bin/env bash
# Set everything up (virtual environment, torch, fastweights[dev]) and run the main job on its embedded
# default: an LSTM, the Linear Transformer, Delta Net and Delta RNN learn code execution (generated data,
# the cpu preset) for a few minutes each; a comparison table and a learning-curve plot come out at the end.
# Safe to run again: finished set-up steps and finished runs are skipped, interrupted runs resume.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
"$VENV/bin/fastweights" compare code-exec --num-vars 3 --preset cpu \
  --models lstm,linear_transformer,delta_net,delta_rnn --out-dir runs/quickstart "$@"
