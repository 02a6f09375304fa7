#!/usr/bin/env bash
# Create (or update) the FuxiCTR peer's own virtual environment: benchmarks/peers/.venv-fuxictr.
# Idempotent: a stamp records that the venv matches the requirement files; a second run takes
# about a second. Separate from the project's .venv so FuxiCTR's pins cannot disturb ours.
#
#   bash benchmarks/peers/setup_fuxictr.sh            # VENV=... to put it elsewhere
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$HERE/.venv-fuxictr}"
PY="$VENV/bin/python"
STAMP="$VENV/.installed"
REQS=("$HERE/requirements-fuxictr.txt" "$HERE/constraints-fuxictr.txt" "$HERE/setup_fuxictr.sh")

hash_reqs() { cat "${REQS[@]}" | sha256sum | cut -d' ' -f1; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(hash_reqs)" ]] && "$PY" -c "import fuxictr, torch" 2>/dev/null; then
    echo "[setup_fuxictr] $VENV is up to date"
    exit 0
fi
if [[ ! -x "$PY" ]]; then
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
PIP=("$PY" -m pip install -q --disable-pip-version-check)
# torch first and alone: the machine's pip configuration finds the local CPU build of this exact
# version; everything after runs under a constraint that keeps it.
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -c "$HERE/constraints-fuxictr.txt" -r "$HERE/requirements-fuxictr.txt"
"$PY" - <<'PYEOF'
import fuxictr, torch
from fuxictr.pytorch.layers import DIN_Attention, FeatureEmbeddingDict, MLP_Block  # noqa: F401
from fuxictr.pytorch.models import BaseModel  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"[setup_fuxictr] fuxictr {fuxictr.__version__}, torch {torch.__version__}")
PYEOF
hash_reqs > "$STAMP"
