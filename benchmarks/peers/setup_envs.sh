#!/usr/bin/env bash
# Create the peer libraries' own virtual environments (gitignored under .venvs/), each with torch pinned to
# Journey's 2.13.0 CPU build through a constraints file, per docs in STACK_NOTES ("Peer libraries"):
#   .venvs/recbole     RecBole 1.2.1 (needs setuptools<81, numpy<2, pandas<3; run with
#                      TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which run_recbole.py sets itself)
#   .venvs/lifestream  pytorch-lifestream 0.6.0 (0.7.0's ptls.preprocessing is missing from its release)
# Usage: bash benchmarks/peers/setup_envs.sh [recbole|lifestream|all]   (idempotent; re-running only tops up)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
WHICH="${1:-all}"
CONSTRAINTS="$ROOT/.venvs/peer-constraints.txt"
mkdir -p "$ROOT/.venvs"
printf 'torch==2.13.0\n' > "$CONSTRAINTS"

make_env() {  # make_env NAME PACKAGE...
  local name="$1"; shift
  local venv="$ROOT/.venvs/$name"
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -c "$CONSTRAINTS" torch==2.13.0   # the local CPU build first
  "$venv/bin/python" -m pip install -q -c "$CONSTRAINTS" "$@"
  "$venv/bin/python" - <<'PY'
import torch, sys
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"{sys.prefix}: torch {torch.__version__}")
PY
}

if [ "$WHICH" = recbole ] || [ "$WHICH" = all ]; then
  make_env recbole "setuptools<81" "numpy<2" "pandas<3" pyarrow recbole==1.2.1
  TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$ROOT/.venvs/recbole/bin/python" -c \
    "import recbole, numpy, pandas; print('recbole', recbole.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__)"
fi
if [ "$WHICH" = lifestream ] || [ "$WHICH" = all ]; then
  make_env lifestream pytorch-lifestream==0.6.0 pyarrow scikit-learn
  "$ROOT/.venvs/lifestream/bin/python" -c \
    "import ptls, ptls.preprocessing, numpy, pandas; print('ptls', getattr(ptls, '__version__', '0.6.0'), 'numpy', numpy.__version__, 'pandas', pandas.__version__)"
fi
