# Shared by quickstart.sh and test.sh: create .venv and install fastweights with the extras in
# FASTWEIGHTS_EXTRAS (default dev: everything the tests need; the quickstart asks only for cpu,plot).
# Idempotent: a stamp file records what was installed; nothing is reinstalled unless pyproject.toml or the
# extras changed (an environment with dev already has cpu and plot).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FASTWEIGHTS_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi

# torch first, in its own step: installing the package into an environment without torch would let pip
# resolve a multi-GB CUDA build of torch on a CPU-only machine.
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "${FASTWEIGHTS_TORCH_INDEX:-}" ]; then
    # e.g. https://download.pytorch.org/whl/cpu for a CPU build on any machine
    "$PY" -m pip install --quiet "${FASTWEIGHTS_TORCH:-torch}" --index-url "$FASTWEIGHTS_TORCH_INDEX"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "${FASTWEIGHTS_TORCH:-torch}"
  else
    # On this project's CPU machines torch==2.13.0 is a CPU wheel in the local wheel cache.
    "$PY" -m pip install --quiet "${FASTWEIGHTS_TORCH:-torch==2.13.0}"
  fi
fi

EXTRAS="${FASTWEIGHTS_EXTRAS:-dev}"
STAMP="$VENV/.fastweights-installed"
HASH="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
# the stamp is "<pyproject hash> <extras>"; dev includes the cpu and plot extras
if [ "${HAVE%% *}" != "$HASH" ] || ! "$PY" -c "import fastweights" 2>/dev/null \
   || { [ "${HAVE#* }" != "$EXTRAS" ] && [ "${HAVE#* }" != "dev" ]; }; then
  "$PY" -m pip install --quiet -e "$ROOT[$EXTRAS]"
  echo "$HASH $EXTRAS" > "$STAMP"
fi
