#!/usr/bin/env bash
# The reinforcement-learning tables of docs/results.md: every core on two MinAtar games (the minatar preset,
# 1.5 M agent steps) and on two memory tasks (the cpu preset with 600 000 agent steps: CountRecall and
# RepeatPrevious, 20-step episodes, 4 symbols), three seeds each, two runs at a time with one thread each
# (`fastweights compare rl --jobs 2`), slowest cores first so that both job slots stay busy.
# Resumable: finished runs are reused and interrupted ones resumed, so re-run it after an interruption.
set -euo pipefail
FASTWEIGHTS_EXTRAS="${FASTWEIGHTS_EXTRAS:-dev}"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
MODELS="delta_rnn,rdn,delta_net,linear_transformer,lstm,feedforward"
OUT="${1:-runs/results-rl}"
SEEDS="${SEEDS:-11,12,13}"
FW="$VENV/bin/fastweights"
mkdir -p "$OUT"
run() { "$FW" compare rl --models "$MODELS" --seeds "$SEEDS" --jobs 2 "$@" ; }
for game in breakout space_invaders; do
  run --env "minatar:$game" --preset minatar --out-dir "$OUT/minatar-$game" 2>&1 | tee "$OUT/minatar-$game.log"
done
run --env count_recall --preset cpu --out-dir "$OUT/memory-count_recall" \
  'env_options={"length": 20, "num_symbols": 4}' total_steps=600000 2>&1 | tee "$OUT/memory-count_recall.log"
run --env repeat_previous --preset cpu --out-dir "$OUT/memory-repeat_previous" \
  'env_options={"length": 20, "delay": 4, "num_symbols": 4}' total_steps=600000 2>&1 | tee "$OUT/memory-repeat_previous.log"
