"""Credentials stay out of logs, ConfigMaps and run cards, even at DEBUG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubetune_operator.reconcile.plan import OperatorSettings, resolve
from kubetune_operator.reconcile.render import render
from kubetune_trainer.contract import s3_credential_env
from tests.unit.operator.helpers import job

pytestmark = pytest.mark.unit

SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessionTOKENnever-to-be-printed"
SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_debug_logging_prints_no_credential_of_an_s3_request(
    s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """KUBETUNE_LOG_LEVEL=DEBUG: a trainer process (its entry point sets up logging; the config
    is missing, so it stops there without loading torch) fetches an s3:// model the way
    model.fetch does, and something logs the whole environment: its output holds neither
    key nor session token (botocore's wire log prints both at DEBUG)."""
    names = s3_credential_env("model")
    env = {
        **os.environ,
        "KUBETUNE_LOG_LEVEL": "DEBUG",
        names["AWS_ACCESS_KEY_ID"]: "AKIAKUBETUNETEST0001",
        names["AWS_SECRET_ACCESS_KEY"]: SECRET_KEY,
        names["AWS_SESSION_TOKEN"]: SESSION_TOKEN,
    }
    script = f"""
from pathlib import Path
from kubetune_trainer.__main__ import run
from kubetune_trainer.storage import download
from kubetune_trainer.config import StorageConfig
from kubetune_trainer.errors import BadInputError
import logging, os
assert run(["--config", "{tmp_path}/absent.json"]) == 44
log = logging.getLogger("kubetune_trainer.storage")
log.debug("debug is on")
log.debug("a library printing its env: %s", dict(os.environ))
try:
    download("s3://{s3_bucket}/models/none", "spec.model.source",
             StorageConfig(store="model", endpoint="{s3_server.endpoint}"), Path("{tmp_path}/m"))
except BadInputError as e:
    print("refused:", e)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "refused: spec.model.source" in log, log[-3000:]
    assert "debug is on" in log and "a library printing its env" in log
    assert SESSION_TOKEN not in log
    assert SECRET_KEY not in log
    assert "AKIAKUBETUNETEST0001" not in log


def test_literal_env_values_stay_out_of_the_config_map() -> None:
    """A literal env value is the pod's business; the ConfigMap and the run card (which copies
    the spec from it) only name the variable."""
    env = [
        {"name": "DB_URL", "value": "postgres://trainer:hunter2@db:5432/runs"},
        {"name": "NCCL_DEBUG", "value": "WARN"},
        {"name": "S3_PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
    ]
    spec = job().spec.model_dump(by_alias=True, exclude_unset=True)
    spec["resources"]["env"] = env
    doc = {"metadata": {"name": "leaky", "namespace": "team-a", "uid": "u"}, "spec": spec}
    from kubetune_operator.api.spec import FineTuneJob

    plan = resolve(FineTuneJob.model_validate(doc), 1, OperatorSettings())
    objs = render(plan)
    config_map = next(o for o in objs if o["kind"] == "ConfigMap")
    text = json.dumps(config_map)
    assert "hunter2" not in text and "WARN" not in text
    copied = plan.trainer_config.spec["resources"]["env"]
    assert [e["name"] for e in copied] == ["DB_URL", "NCCL_DEBUG", "S3_PW"]
    assert copied[2]["valueFrom"] == env[2]["valueFrom"]
    pod = next(o for o in objs if o["kind"] == "Pod")
    assert {"name": "DB_URL", "value": env[0]["value"]} in pod["spec"]["containers"][0]["env"]
