#!/usr/bin/env bash
# The CPU language-modelling tables of docs/results.md: on the embedded Shakespeare corpus (word level) with the
# cpu preset (trained until the validation perplexity stops improving), every model of the paper's table with
# truncated-context training scored by a sliding window of 128 tokens, and the recurrent ones with the state
# carried through the text (--carry-state) scored with the state carried; three seeds each, two runs at a time with
# one thread each (`fastweights compare lm --jobs 2`), slowest models first so that both job slots stay busy.
# Resumable: finished runs are reused and interrupted ones resumed, so re-run it after an interruption.
# With KEEP=DIR the records of every finished run (config.json, results.json, metrics.csv) and each grid's
# summary.md and curves.png are copied to DIR/truncated and DIR/carried (docs/runs/lm holds the published ones:
# `fastweights compare lm --report-only ... --out-dir` on a copy of them rebuilds the tables without training).
# Usage: [SEEDS=11,12,13] [KEEP=docs/runs/lm] bash scripts/results_lm.sh [OUT_DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
OUT="${1:-runs/results-lm}"
SEEDS="${SEEDS:-11,12,13}"
FW="$VENV/bin/fastweights"
TRUNCATED="delta_lstm,delta_mlp,delta_delta_net,delta_rnn,rdn,delta_net,linear_transformer,transformer,lstm"
CARRIED="delta_lstm,delta_rnn,rdn,delta_net,lstm"  # the transformer's state is a KV cache that grows with the text
mkdir -p "$OUT"
source "$ROOT/scripts/_records.sh"
keep() { [ -z "${KEEP:-}" ] || keep_records "$OUT/$1" "$KEEP/$1"; }  # keep GRID: the records of GRID to $KEEP/GRID
"$FW" compare lm --models "$TRUNCATED" --seeds "$SEEDS" --jobs 2 --preset cpu --out-dir "$OUT/truncated" \
  log_every_s=60 2>&1 | tee -a "$OUT/truncated.log"
keep truncated
"$FW" compare lm --carry-state --models "$CARRIED" --seeds "$SEEDS" --jobs 2 --preset cpu --out-dir "$OUT/carried" \
  log_every_s=60 2>&1 | tee -a "$OUT/carried.log"
keep carried
