#!/usr/bin/env bash
# The algorithmic grid of docs/results.md: the paper's six models on code execution (3 and 5 variables) and ListOps
# (depth 10 and 15) with the cpu presets, two runs at a time with one thread each (`fastweights compare --jobs 2`),
# slowest models first so that both job slots stay busy. Three seeds per cell, five for code execution with
# 5 variables (the paper's claim of Delta Net's instability across seeds); and the LSTM on ListOps with 4x the
# updates (the LSTM claims: at the grid's 3,125 updates it is still learning).
# Resumable: finished runs are reused and interrupted ones resumed, so re-run it after an interruption.
# With KEEP=DIR (docs/runs/algorithmic holds the published records) the records of DIR are copied into the grid
# first, so that only the missing runs train, and every finished run's config.json, results.json and metrics.csv,
# with each setting's summary.md and figures, are copied back to DIR/<setting>/ when a setting is done.
# `fastweights compare TASK --report-only ... --out-dir` on a copy of the records rebuilds the tables without
# training (docs/runs/algorithmic/README.md).
# Usage: [SETTINGS="code-exec-3 listops-15"] [KEEP=docs/runs/algorithmic] bash scripts/results_algorithmic.sh [OUT]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
MODELS="delta_rnn,rdn,delta_net,linear_transformer,transformer,lstm"
OUT="${1:-runs/results}"
SETTINGS="${SETTINGS:-code-exec-3 code-exec-5 listops-10 listops-15 listops-10-lstm-long listops-15-lstm-long}"
FW="$VENV/bin/fastweights"
mkdir -p "$OUT"
source "$ROOT/scripts/_records.sh"
for setting in $SETTINGS; do
  models="$MODELS"
  case "$setting" in
    code-exec-3) args=(code-exec --num-vars 3 --seeds 11,12,13) ;;
    code-exec-5) args=(code-exec --num-vars 5 --seeds 11,12,13,14,15) ;;
    listops-10) args=(listops --depth 10 --seeds 11,12,13) ;;
    listops-15) args=(listops --depth 15 --seeds 11,12,13) ;;
    # the LSTM learns ListOps slowly per update: its claims are decided with 4x the updates (12,500)
    listops-10-lstm-long) args=(listops --depth 10 --seeds 11,12,13 epochs=20); models=lstm ;;
    listops-15-lstm-long) args=(listops --depth 15 --seeds 11,12,13 epochs=20); models=lstm ;;
    *) echo "SETTINGS: unknown setting $setting (code-exec-3, code-exec-5, listops-10, listops-15," \
         "listops-10-lstm-long, listops-15-lstm-long)" >&2; exit 2 ;;
  esac
  [ -z "${KEEP:-}" ] || restore_records "$KEEP/$setting" "$OUT/$setting"
  "$FW" compare "${args[@]}" --models "$models" --preset cpu --jobs 2 --out-dir "$OUT/$setting" \
    2>&1 | tee -a "$OUT/$setting.log"
  [ -z "${KEEP:-}" ] || keep_records "$OUT/$setting" "$KEEP/$setting"
done
