#!/usr/bin/env bash
# Create (once per machine) the Python environment kubetune needs and install this checkout
# into it. Idempotent: a second run only re-links the checkout. Torch from PyPI is large, so the
# environment lives outside the repository and is shared by every clone on the machine.
set -euo pipefail
VENV="${KUBETUNE_VENV:-$HOME/.cache/kubetune/venv}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$VENV/bin/python"
[ -x "$PY" ] || python3 -m venv "$VENV"
stamp="$VENV/.kubetune-deps-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing dependencies into $VENV (first run on this machine: several minutes)"
  "$PY" -m pip install -q --upgrade pip wheel setuptools
  # deepspeed builds from an sdist: torch first, then no build isolation and no compiled ops.
  "$PY" -m pip install -q "torch>=2.4"
  "$PY" -m pip install -q "setuptools>=69" ninja py-cpuinfo hjson msgpack psutil packaging
  DS_BUILD_OPS=0 "$PY" -m pip install -q --no-build-isolation "deepspeed>=0.16"
  "$PY" -m pip install -q -e "$ROOT[trainer,gpu,dev]"
  touch "$stamp"
fi
# Point the editable install at this checkout (cheap; several clones may share the venv).
if ! "$PY" -c "import kubetune_operator, sys; sys.exit(0 if kubetune_operator.__file__.startswith('$ROOT/') else 1)" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
fi
# The MLflow tracking server the tests start runs from an environment of its own (cached).
bash "$ROOT/hack/setup-mlflow-server.sh" >/dev/null
echo "$VENV"
