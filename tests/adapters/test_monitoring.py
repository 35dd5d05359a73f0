"""deploy/monitoring: every metric an alert rule or a dashboard panel reads is one callsync
exports, with labels it has, and every expression parses as Prometheus would run it.

What callsync exports is read from a scrape of `/metrics` (create_app on fakeredis) after
callsync's own code has made every family show a sample: a real task retried on a 429, then
dead-lettered; a sweep; a heartbeat; a webhook; a calls API request. A renamed metric or label
fails here, not on an operator's dashboard. `promtool` (the rules' own unit tests) is .ci/run's.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.adapters.test_metrics import SETTINGS, post_stream
from tests.samples import load, samples_clock
from tests.steps.test_retry_policy import Worker, channel_to_write
from tests.support.world import CID
from webhooks.app import create_app
from worker.core import actions
from worker.ops.heartbeat import record_heartbeat

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
OPERATIONS = MONITORING.parents[1] / "docs" / "operations.md"
ALERTS = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
DASHBOARD = json.loads((MONITORING / "dashboard.json").read_text())

# The sample names of a family of each type (the text format's suffixes).
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}
TARGET_LABELS = {"job", "instance"}  # Prometheus adds them to every scraped series
# What Grafana puts in place of its own variables before the query reaches Prometheus.
GRAFANA = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def dashboard_variables() -> dict[str, str]:
    """Each dashboard variable → a value it takes: a textbox's default, a query's "All" as a regex."""
    values = {}
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "textbox":
            values[variable["name"]] = variable["query"]
        elif variable["type"] == "query":
            values[variable["name"]] = "(callsync|callsync-staging)"
    return values


def substitute(expr: str) -> str:
    for name, value in sorted({**GRAFANA, **dashboard_variables()}.items(), key=lambda item: -len(item[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"a variable the dashboard does not define: {expr}"
    return expr


def expressions() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every alert rule, panel query and query variable."""
    for group in ALERTS["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", substitute(target["expr"])
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(metric, label): the series that carry `label`, as a selector.
            metric, label = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"]).groups()
            yield f"variable {variable['name']}", f'{metric}{{{label}!=""}}'


EXPRESSIONS = list(expressions())


def read(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The selectors of `expr` (metric, label names matched) and the labels it groups or matches on."""
    selectors: list[tuple[str, set[str]]] = []
    grouping: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers
            name = node.name or next(m.value for m in matchers if m.name == "__name__")
            selectors.append((name, {m.name for m in matchers if m.name != "__name__"}))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None and node.modifier.matching is not None:
            grouping.update(node.modifier.matching.labels)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return selectors, grouping


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Every sample name a scrape of /metrics carries → the label names on its family's samples."""
    worker = Worker()
    try:
        world = worker.world
        channel_to_write(world)  # a session recorded open: the open-session gauges
        world.stream.fail_next(1, 429, {"Retry-After": "1"})
        assert worker.run(actions.RECONCILE, CID) == "retry"  # a 429: a wait, a retry
        world.stream.fail_next(1, 400)
        assert worker.run(actions.RECONCILE, CID, retries=1) == "returned"  # a dead letter
        assert worker.run(actions.SWEEP) == "returned"  # the last sweep's time
        assert worker.run(actions.RESYNC, True) == "returned"  # the last resync, its outcomes
        redis = world.rt.redis
        world.rt.tally.flush(redis)
    finally:
        worker.close()
    record_heartbeat(redis, "celery@host-1", {"pid": 1, "concurrency": 4}, time.time())
    client = create_app(SETTINGS, redis, clock=samples_clock).test_client()
    assert post_stream(client, load("stream_channel_updated")).status_code == 202
    assert client.post("/calls/call-messaging:general/end").status_code == 503  # no calls API settings: still counted
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        assert family.samples, f"{family.name} shows no sample: make the fixture produce one"
        labels = set().union(*(sample.labels for sample in family.samples))
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = labels if suffix == "_bucket" else labels - {"le"}
    return names


def test_the_scrape_shows_the_families_the_issue_names(exported: dict[str, set[str]]) -> None:
    # A guard on the fixture itself: a scrape that lost its Redis half would make every check vacuous.
    for name in ("callsync_queue_depth", "callsync_task_duration_seconds_bucket", "callsync_webhooks_received_total"):
        assert name in exported


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[where for where, _ in EXPRESSIONS])
def test_each_expression_parses_and_reads_what_callsync_exports(exported: dict[str, set[str]], where: str, expr: str) -> None:
    selectors, grouping = read(expr)
    known = set(TARGET_LABELS)
    for metric, matched in selectors:
        assert metric in exported, f"{where}: callsync exports no {metric}"
        assert matched <= exported[metric] | TARGET_LABELS, (
            f"{where}: {metric} has no label {matched - exported[metric] - TARGET_LABELS}"
        )
        known |= exported[metric]
    assert grouping <= known, f"{where}: groups by {grouping - known}, which none of its metrics has"


def test_every_rule_and_panel_is_checked() -> None:
    alerts = [rule["alert"] for group in ALERTS["groups"] for rule in group["rules"]]
    targets = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
    assert len(alerts) >= 9 and len(targets) >= 15
    assert {where for where, _ in EXPRESSIONS} >= {f"alert {name}" for name in alerts}
    assert all(panel["targets"] for panel in targets)


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ +(.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_every_alert_is_named_labelled_and_has_a_runbook_section() -> None:
    sections = anchors(OPERATIONS.read_text())
    for group in ALERTS["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert re.fullmatch(r"Callsync(?:[A-Z][a-z0-9]+)+", name), name
            assert rule["labels"]["severity"] in ("warning", "critical"), name
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
            page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
            assert page == "docs/operations.md" and anchor == name.lower() and anchor in sections, name


def test_every_alert_has_unit_tests_that_fire_it_and_that_do_not() -> None:
    tests = yaml.safe_load((MONITORING / "alerts_test.yaml").read_text())["tests"]
    evaluations = [check for test in tests for check in test["alert_rule_test"]]
    for rule in (rule for group in ALERTS["groups"] for rule in group["rules"]):
        outcomes = [bool(check["exp_alerts"]) for check in evaluations if check["alertname"] == rule["alert"]]
        assert True in outcomes and False in outcomes, rule["alert"]


def test_the_committed_dashboard_is_what_dashboard_py_builds() -> None:
    spec = importlib.util.spec_from_file_location("callsync_dashboard", MONITORING / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (MONITORING / "dashboard.json").read_text() == module.render(), "run python3 deploy/monitoring/dashboard.py"


def test_the_dashboard_names_its_datasource_only_through_its_variable() -> None:
    def datasources(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield value
                yield from datasources(value)
        elif isinstance(node, list):
            for item in node:
                yield from datasources(item)

    found = list(datasources(DASHBOARD))
    assert found and all(ds == {"type": "prometheus", "uid": "${datasource}"} for ds in found)
    [variable] = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert variable["name"] == "datasource" and variable["query"] == "prometheus"
