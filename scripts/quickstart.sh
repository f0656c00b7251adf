#!/usr/bin/env bash
# Set everything up (virtual environment, torch, fastweights with the cpu and plot extras) and run the main
# job: the Recurrent Delta Net (RDN), Delta Net, the Linear Transformer and an LSTM learn code execution with
# 3 variables (generated programs of 5 statements, the cpu preset shortened to 4 epochs), two runs at a time with
# one thread each.
# A table of test accuracies and a learning-curve figure come out at the end (runs/quickstart/).
# About 10 minutes on an idle 2-core machine, set-up included (README). Safe to run again: finished set-up
# steps and finished runs are skipped, interrupted runs resume.
set -euo pipefail
FASTWEIGHTS_EXTRAS="${FASTWEIGHTS_EXTRAS:-cpu,plot}"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
# longest runs first, so that the two job slots finish together: rdn and delta_net, then the linear transformer
# and the lstm in whichever slot frees first
"$VENV/bin/fastweights" compare code-exec --num-vars 3 --preset cpu code_length=5 epochs=4 --jobs 2 \
  --models rdn,delta_net,linear_transformer,lstm --out-dir runs/quickstart "$@"
