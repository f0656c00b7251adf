#!/usr/bin/env bash
# The algorithmic tables of docs/results.md: the paper's six models on the four task settings with the cpu
# presets, two runs at a time with one thread each (`fastweights compare --jobs 2`). The slowest models come
# first so that the two job slots stay busy. The headline cells of the paper (code execution with 5 variables,
# ListOps depth 15) get three seeds; the other two settings get SEEDS_OTHER (default: one seed, 11).
# Resumable: finished runs are reused and interrupted ones resumed, so re-run it after an interruption.
# Measured here: 24 + 70 + 34 + 8 minutes (the four settings) on a 2-core machine shared with other work.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
MODELS="rdn,delta_rnn,delta_net,linear_transformer,transformer,lstm"
OUT="${1:-runs/results}"
SEEDS_HEADLINE="${SEEDS_HEADLINE:-11,12,13}"
SEEDS_OTHER="${SEEDS_OTHER:-11}"
FW="$VENV/bin/fastweights"
mkdir -p "$OUT"
run() { "$FW" compare "$@" --models "$MODELS" --preset cpu --jobs 2 ; }
run code-exec --num-vars 3 --seeds "$SEEDS_OTHER" --out-dir "$OUT/code-exec-3" 2>&1 | tee "$OUT/code-exec-3.log"
run code-exec --num-vars 5 --seeds "$SEEDS_HEADLINE" --out-dir "$OUT/code-exec-5" 2>&1 | tee "$OUT/code-exec-5.log"
run listops --depth 15 --seeds "$SEEDS_HEADLINE" --out-dir "$OUT/listops-15" 2>&1 | tee "$OUT/listops-15.log"
run listops --depth 10 --seeds "$SEEDS_OTHER" --out-dir "$OUT/listops-10" 2>&1 | tee "$OUT/listops-10.log"
