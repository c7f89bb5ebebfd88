"""The Grafana dashboard and the alert rules use only metric names the code exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

from tests.unit.chart.helm import CHART, by_kind, render

pytestmark = pytest.mark.unit

DASHBOARD = CHART / "dashboards" / "kubetune.json"
METRIC_NAME = re.compile(r"\bkubetune_[a-z0-9_]+")

# The suffixes Prometheus exposition adds to each metric family type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def sample_names(families: Iterable[Metric]) -> set[str]:
    """Every series name the families can expose, whether or not a sample was recorded yet."""
    return {f.name + suffix for f in families for suffix in SUFFIXES.get(f.type, ("",))}


def operator_metric_names() -> set[str]:
    """Names registered by importing the operator's metrics module (default registry)."""
    import kubetune_operator.metrics  # noqa: F401  (registers its metrics)

    return {n for n in sample_names(REGISTRY.collect()) if n.startswith("kubetune_")}


def trainer_metric_names() -> set[str]:
    """Names of a trainer Metrics object (its own registry)."""
    from kubetune_trainer.metrics import Metrics

    registry: CollectorRegistry = Metrics(job="names", rank=0).registry
    return sample_names(registry.collect())


def exported_names() -> set[str]:
    return operator_metric_names() | trainer_metric_names()


def dashboard_exprs() -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and template variable queries."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
    return exprs


def rule_exprs(tmp: Path) -> list[str]:
    """Every alert expression of the PrometheusRule the chart renders."""
    docs = render(tmp, [CHART / "values-examples" / "monitoring.yaml"])
    rule = by_kind(docs, "PrometheusRule")[0]
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]


def unknown_names(exprs: Iterable[str], known: set[str]) -> set[str]:
    """Metric names used in `exprs` that no code exports."""
    return {name for e in exprs for name in METRIC_NAME.findall(e)} - known


def test_code_exports_operator_and_trainer_metrics() -> None:
    names = exported_names()
    assert any(n.startswith("kubetune_trainer_") for n in names)
    assert operator_metric_names(), "the operator exports no kubetune_ metrics"


def test_dashboard_uses_only_exported_metrics() -> None:
    known = exported_names()
    exprs = dashboard_exprs()
    assert exprs
    assert not unknown_names(exprs, known), (
        f"dashboard uses names no code exports: {unknown_names(exprs, known)}"
    )
    used = {n for e in exprs for n in METRIC_NAME.findall(e)}
    assert used & operator_metric_names() and used & trainer_metric_names()


def test_alert_rules_use_only_exported_metrics(tmp_path: Path) -> None:
    exprs = rule_exprs(tmp_path)
    assert len(exprs) == 3
    assert not unknown_names(exprs, exported_names())


def test_check_catches_a_renamed_metric() -> None:
    assert unknown_names(["rate(kubetune_trainer_stepz[5m])"], exported_names()) == {
        "kubetune_trainer_stepz"
    }


def test_metric_list_in_docs_matches_code() -> None:
    """docs/monitoring.md lists every exported metric family."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "monitoring.md").read_text()
    families = {
        n.removesuffix("_total")
        for n in exported_names()
        if not n.endswith(("_created", "_bucket", "_sum", "_count"))
    }
    missing = {f for f in families if f"`{f}" not in text}
    assert not missing, f"docs/monitoring.md does not list: {sorted(missing)}"


# A metric name or a name prefix (ending in _ or *) in prose; module paths (kubetune_trainer/...,
# operator/kubetune_operator) and dotted names are not metric names.
MENTION = re.compile(r"(?<![\w/])kubetune_[a-z0-9_]+\*?(?![\w/.])")


def unknown_mentions(text: str, known: set[str]) -> set[str]:
    """Metric names (or prefixes) mentioned in text that match nothing the code exports."""
    out = set()
    for name in MENTION.findall(text):
        stem = name.rstrip("*")
        prefix = name.endswith(("*", "_"))
        if not (stem in known or (prefix and any(k.startswith(stem) for k in known))):
            out.add(name)
    return out


def test_values_and_docs_name_only_exported_metrics() -> None:
    """values.yaml and the docs name metrics (or prefixes of them) that the code exports."""
    root = Path(__file__).resolve().parents[3]
    series = exported_names()
    known = series | {n.removesuffix(x) for n in series for x in ("_bucket", "_sum", "_count")}
    for path in [CHART / "values.yaml", *sorted((root / "docs").glob("*.md"))]:
        unknown = unknown_mentions(path.read_text(), known)
        assert not unknown, f"{path.name} names metrics no code exports: {sorted(unknown)}"
    assert unknown_mentions("(prefix kubetune_operator_)", known) == {"kubetune_operator_"}
