#!/usr/bin/env bash
# Create (once per machine) the Python environment the tests run an MLflow tracking server from.
# The server (mlflow with its UI, SQLAlchemy, alembic, pyarrow pins) lives apart from the main
# environment so it never moves a package the trainer depends on; the trainer only needs the
# client (mlflow-skinny, in the [trainer] extra). Idempotent; prints the environment's python.
set -euo pipefail
MLFLOW_VERSION="${KUBETUNE_MLFLOW_VERSION:-3.17.2}"
VENV="${KUBETUNE_MLFLOW_VENV:-$HOME/.cache/kubetune/mlflow-server}"
PY="$VENV/bin/python"
stamp="$VENV/.kubetune-mlflow-$MLFLOW_VERSION"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the MLflow $MLFLOW_VERSION tracking server into $VENV" >&2
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip >&2
  # boto3: the server stores artifacts in S3 (--artifacts-destination s3://...).
  "$PY" -m pip install -q "mlflow==$MLFLOW_VERSION" boto3 >&2
  touch "$stamp"
fi
echo "$PY"
