#!/usr/bin/env bash
# Set everything up (virtual environment, torch, fastweights with the cpu and plot extras) and run the main
# job: the Recurrent Delta Net (RDN), Delta Net, the Linear Transformer and an LSTM learn code execution with
# 3 variables (generated data, the cpu preset shortened to 3 epochs), two runs at a time with one thread each.
# A table of test accuracies and a learning-curve figure come out at the end (runs/quickstart/).
# About 10 minutes on an idle 2-core machine, set-up included (README). Safe to run again: finished set-up
# steps and finished runs are skipped, interrupted runs resume.
set -euo pipefail
FASTWEIGHTS_EXTRAS="${FASTWEIGHTS_EXTRAS:-cpu,plot}"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
# rdn first: it is the longest run, the other three share the second job slot meanwhile
"$VENV/bin/fastweights" compare code-exec --num-vars 3 --preset cpu epochs=3 --jobs 2 \
  --models rdn,lstm,linear_transformer,delta_net --out-dir runs/quickstart "$@"
