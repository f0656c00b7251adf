#!/usr/bin/env bash
# One short check of the Triton kernels on a CUDA machine:
#   1. the Triton tests, compiled natively (no interpreter): tests/ops/test_ops_triton*.py, with the first-use
#      check off (FASTWEIGHTS_TRITON_CHECK=0), so that a broken kernel fails its test instead of falling back;
#   2. fastweights selftest --device cuda: every op and dtype against float64, then triton vs PyTorch speed;
#   3. the GPU benchmark + numerics (python -m fastweights.ops.triton.gpu_bench): ours vs the naive loop vs
#      flash-linear-attention (when importable) at the paper's and the LM's shapes, errors against float64.
# Needs torch with CUDA and triton (>= 3.2) already installed; no network, no install of fastweights (src/ goes
# on PYTHONPATH). Optional: wheels in .whl/ (e.g. fla-core and einops, see docs/gpu.md) are unpacked to a
# temporary site directory first. Logs and the JSON go to $OUT (or /tmp/fastweights_gpu_check). Exit status: non-zero if a
# test or a numerics check failed (missed speed targets are reported, not fatal).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/fastweights_gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fw_site .whl/*.whl \
    && export PYTHONPATH="/tmp/fw_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi -L 2>/dev/null | tee "$OUT/gpu.txt"
"$PY" - <<'PY' | tee -a "$OUT/gpu.txt"
import importlib.util, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for m in ("triton", "fla", "numba"):
    spec = importlib.util.find_spec(m)
    print(m, "importable" if spec else "missing")
import triton
print("triton", triton.__version__)
PY

status=0
XDIST=()
if "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n 8); fi
echo "== 1/3 Triton tests (native) =="
FASTWEIGHTS_TRITON_CHECK=0 timeout 240 "$PY" -m pytest tests/ops/test_ops_triton.py tests/ops/test_ops_triton_registry.py \
  tests/ops/test_ops_triton_bench.py -q -p no:cacheprovider "${XDIST[@]}" --durations=10 2>&1 | tee "$OUT/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 2/3 fastweights selftest =="
timeout 300 "$PY" -m fastweights.cli selftest --device cuda --json "$OUT/selftest.json" 2>&1 | tee "$OUT/selftest.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 3/3 GPU benchmark =="
timeout 420 "$PY" -m fastweights.ops.triton.gpu_bench --json "$OUT/gpu_bench.json" --budget-s 200 \
  2> "$OUT/bench_progress.log" | tee "$OUT/bench.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
tail -n 5 "$OUT/bench_progress.log"
echo "gpu_check: exit status $status (logs in $OUT)"
exit $status
