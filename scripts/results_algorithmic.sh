#!/usr/bin/env bash
# Reproduce the CPU columns of docs/results.md: every model of the paper's algorithmic table on the four
# tasks with the cpu presets, two tasks at a time, one thread each (about an hour on a 2-core machine).
# Finished runs are reused and interrupted ones resumed, so the script can be re-run after an interruption.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
MODELS="lstm,transformer,linear_transformer,delta_net,delta_rnn,rdn"
OUT="${1:-runs/results}"
FW="$VENV/bin/fastweights"
mkdir -p "$OUT"
run() { "$FW" compare "$@" --models "$MODELS" --preset cpu threads=1 log_every_s=60 ; }
( run code-exec --num-vars 3 --out-dir "$OUT/code-exec-3" > "$OUT/code-exec-3.log" 2>&1
  run listops --depth 10 --out-dir "$OUT/listops-10" > "$OUT/listops-10.log" 2>&1 ) &
( run code-exec --num-vars 5 --out-dir "$OUT/code-exec-5" > "$OUT/code-exec-5.log" 2>&1
  run listops --depth 15 --out-dir "$OUT/listops-15" > "$OUT/listops-15.log" 2>&1 ) &
wait
cat "$OUT"/*/summary.md
