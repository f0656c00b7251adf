#!/usr/bin/env bash
# Reproduce the CPU language-modelling columns of docs/results.md: every registry model on the embedded
# Shakespeare corpus (word level) with the cpu preset and one fixed budget, truncated-context training
# (test perplexity on 128-token segments) and carried-state training (test perplexity with the state carried
# through the whole split). Two runs at a time, one thread each. Finished runs are reused, interrupted ones
# resumed. Usage: bash scripts/results_lm.sh [OUT_DIR] [MAX_STEPS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
OUT="${1:-runs/results-lm}"
STEPS="${2:-300}"
FW="$VENV/bin/fastweights"
BUDGET="max_steps=$STEPS warmup_steps=50 eval_interval=100 threads=1 log_every_s=60"
mkdir -p "$OUT"

one() {  # one() MODEL MODE
  local model="$1" mode="$2" dir="$OUT/$1-$2" flag="" evalmode="segments"
  if [ "$mode" = carry ]; then flag="--carry-state"; evalmode="carry"; fi
  if [ ! -f "$dir/results.json" ]; then
    if [ -f "$dir/last.pt" ]; then "$FW" train lm --resume "$dir"
    else rm -rf "$dir"; "$FW" train lm --model "$model" --preset cpu $flag $BUDGET --run-dir "$dir"; fi
  fi
  [ -f "$dir/test-$evalmode.json" ] || "$FW" eval "$dir" --split test --mode "$evalmode" > "$dir/test-$evalmode.json"
}

# the transformer's carried state is a KV cache that grows with the text, and feedforward has no state:
# both are trained with truncated context only
LANE1="linear_transformer delta_net delta_mlp delta_delta_net transformer"
LANE2="delta_rnn delta_lstm rdn lstm feedforward"
lane() { for m in $1; do
  one "$m" truncated > "$OUT/$m-truncated.log" 2>&1
  case "$m" in transformer|feedforward) ;; *) one "$m" carry > "$OUT/$m-carry.log" 2>&1 ;; esac
done; }
lane "$LANE1" & lane "$LANE2" & wait
"$VENV/bin/python" "$ROOT/scripts/results_lm_table.py" "$OUT"
