"""Builds dashboard.json, callsync's Grafana dashboard: `python3 deploy/monitoring/dashboard.py`.

The JSON is what operators import; this file is where it is changed (a panel is one entry of
ROWS), and tests/adapters/test_monitoring.py fails when the two differ. Every query names its
datasource through the `datasource` variable, so the dashboard imports into any Grafana.

Aggregation, as in alerts.yaml: the receiver's webhook and calls API counters are per web
instance (summed); everything read from Redis (state gauges, the workers' counters) is the
same on every instance, so it is first reduced with `max by (job, <its labels>)`, then summed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("dashboard.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
JOB = 'job=~"$job"'
RATE = "$__rate_interval"
# The Stream channel write: worker/clients/stream.py's PATCH, the call CALLSYNC_STREAM_UPDATE_RATE paces.
WRITE = f'{JOB}, api="stream", method="PATCH", endpoint="/channels/{{type}}/{{id}}"'


def once(expr: str, labels: str = "") -> str:
    """A cluster-wide series taken once per job, whichever instance served it."""
    return f"max by (job{', ' + labels if labels else ''}) ({expr})"


def query(expr: str, legend: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend}


def line_at(name: str) -> dict[str, Any]:
    """An override drawing the series `name` as a dashed red limit."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
        ],
    }


def panel(title: str, description: str, targets: list[dict[str, Any]], unit: str = "short", **extra: Any) -> dict[str, Any]:
    return {"title": title, "description": description, "targets": targets, "unit": unit, **extra}


UPSTREAM_FAILED = 'status=~"429|5..|timeout|transport_error"'


def calls(matcher: str = "") -> str:
    """The rate of upstream calls (all, or those `matcher` picks), once per job and series."""
    selector = f"{JOB}, {matcher}" if matcher else JOB
    return once(f"rate(callsync_upstream_calls_total{{{selector}}}[{RATE}])", "api, method, endpoint, status")


RECEIVER = [
    panel(
        "Webhooks by source and outcome",
        "Deliveries answered per second, summed over web instances.",
        [query(f"sum by (source, outcome) (rate(callsync_webhooks_received_total{{{JOB}}}[{RATE}]))", "{{source}} {{outcome}}")],
        "reqps",
    ),
    panel(
        "Webhook rejections by reason",
        "unavailable and queue_full are answered 503: the platform retries.",
        [
            query(
                f'sum by (source, reason) (rate(callsync_webhooks_received_total{{{JOB}, outcome="rejected"}}[{RATE}]))',
                "{{source}} {{reason}}",
            )
        ],
        "reqps",
    ),
    panel(
        "Calls API requests by route and status",
        "The calls API's answers, summed over web instances.",
        [query(f"sum by (route, status) (rate(callsync_calls_api_requests_total{{{JOB}}}[{RATE}]))", "{{route}} {{status}}")],
        "reqps",
    ),
    panel(
        "Redis from each receiver",
        "1 when Redis answered the instance's last scrape. The receiver has no answer-time histogram yet.",
        [query(f"min by (instance) (callsync_redis_up{{{JOB}}})", "{{instance}}")],
        min=0,
        max=1,
    ),
]

WORK = [
    panel(
        "Queue depth",
        "Tasks waiting, and taken by workers but not yet acknowledged.",
        [
            query(f"sum by (queue) ({once(f'callsync_queue_depth{{{JOB}}}', 'queue')})", "{{queue}} waiting"),
            query(f"sum by (queue) ({once(f'callsync_queue_reserved{{{JOB}}}', 'queue')})", "{{queue}} taken by workers"),
        ],
    ),
    panel(
        "Queue trend",
        "Tasks a minute the queue grew (above 0) or shrank, over 15 minutes: CallsyncQueueBacklogGrowing's signal.",
        [query(f"sum by (queue) ({once(f'deriv(callsync_queue_depth{{{JOB}}}[15m])', 'queue')}) * 60", "{{queue}}")],
    ),
    panel(
        "Task outcomes",
        "Task runs per second by task and outcome (success, retry, deferred, dead_letter, error).",
        [
            query(
                f"sum by (task, outcome) ({once(f'rate(callsync_task_runs_total{{{JOB}}}[{RATE}])', 'task, outcome')})",
                "{{task}} {{outcome}}",
            )
        ],
        "ops",
    ),
    panel(
        "Task duration p50 / p95",
        "Run time by task, every outcome.",
        [
            query(
                f"histogram_quantile({q}, sum by (task, le) "
                f"({once(f'rate(callsync_task_duration_seconds_bucket{{{JOB}}}[{RATE}])', 'task, outcome, le')}))",
                f"p{round(q * 100)} {{{{task}}}}",
            )
            for q in (0.5, 0.95)
        ],
        "s",
    ),
    panel(
        "Workers seen",
        "Workers with a heartbeat in the last 30 s.",
        [query(f"sum({once(f'callsync_workers_seen{{{JOB}}}')})", "workers")],
        min=0,
    ),
]

UPSTREAM = [
    panel(
        "Stream channel writes and the ceiling",
        "Channel updates per second by status; the dashed line is CALLSYNC_STREAM_UPDATE_RATE per second "
        "(the `stream_ceiling` variable: set it to your setting, 300/m is 5).",
        [
            query(f"sum by (status) ({once(f'rate(callsync_upstream_calls_total{{{WRITE}}}[{RATE}])', 'status')})", "{{status}}"),
            query("vector($stream_ceiling)", "ceiling"),
        ],
        "reqps",
        overrides=[line_at("ceiling")],
    ),
    panel(
        "Write queue",
        "Keys waiting for a write at the endpoint's ceiling (channels: CALLSYNC_STREAM_UPDATE_RATE, keyed by "
        "channel; messages: CALLSYNC_STREAM_MESSAGE_RATE, keyed by call session), and how long "
        "the oldest has waited. A burst of N drains in N / ceiling; an oldest wait that keeps growing with "
        "no writes means no drain runs (no worker) or 429s pause the endpoint. An oldest wait over a minute for "
        "30 minutes is CallsyncStreamCeilingSaturated.",
        [
            query(f"max by (endpoint) ({once(f'callsync_write_queue_depth{{{JOB}}}', 'endpoint')})", "{{endpoint}} waiting"),
            query(
                f"max by (endpoint) ({once(f'callsync_write_queue_oldest_wait_seconds{{{JOB}}}', 'endpoint')})",
                "{{endpoint}} oldest wait (s)",
            ),
        ],
        min=0,
    ),
    panel(
        "Waits before upstream calls",
        "Seconds waited per second before upstream calls: the write queue's drain sleeping to its next slot "
        "(source ceiling for channel updates, message_ceiling for call messages: at most 1 per endpoint), and "
        "the pauses after a 429 (upstream_429; message_429: a 429 on a call message, which pauses messages only).",
        [
            query(
                f"sum by (api, source) ({once(f'rate(callsync_rate_limit_wait_seconds_total{{{JOB}}}[{RATE}])', 'api, source')})",
                "{{api}} {{source}}",
            )
        ],
    ),
    panel(
        "Upstream calls by platform and status",
        "Calls to Stream and 100ms per second, workers' and the calls API's.",
        [
            query(
                f"sum by (api, status) ({calls()})",
                "{{api}} {{status}}",
            )
        ],
        "reqps",
    ),
    panel(
        "Upstream 429 / 5xx / timeout ratio",
        "Share of each platform's calls that failed; above 10% for 15 minutes is CallsyncUpstreamErrorRatioHigh.",
        [
            query(
                f"sum by (api) ({calls(UPSTREAM_FAILED)}) / sum by (api) ({calls()})",
                "{{api}}",
            )
        ],
        "percentunit",
    ),
]

SESSIONS = [
    panel(
        "Open sessions and bound channels",
        "100ms sessions recorded open; channels bound to a call in the last 14 days.",
        [
            query(f"sum({once(f'callsync_open_sessions{{{JOB}}}')})", "open sessions"),
            query(f"sum({once(f'callsync_bound_channels{{{JOB}}}')})", "bound channels"),
        ],
    ),
    panel(
        "Oldest open session",
        "Age of the oldest open session; the dashed line is CALLSYNC_MAX_SESSION_SECONDS (the `max_session_seconds` variable).",
        [
            query(f"max({once(f'callsync_oldest_open_session_age_seconds{{{JOB}}}')})", "oldest"),
            query("vector($max_session_seconds)", "limit"),
        ],
        "s",
        overrides=[line_at("limit")],
    ),
    panel(
        "Dead letters",
        "Kept now (callsync dead-letters list), and new ones by task.",
        [
            query(f"sum({once(f'callsync_dead_letters{{{JOB}}}')})", "kept"),
            query(f"sum by (task) ({once(f'increase(callsync_dead_lettered_total{{{JOB}}}[{RATE}])', 'task')})", "new: {{task}}"),
        ],
        min=0,
    ),
    panel(
        "Since the last sweep",
        "Seconds since the last completed sweep; over 600 for 5 minutes is CallsyncSweepOverdue.",
        [query(f"time() - max({once(f'callsync_last_sweep_timestamp_seconds{{{JOB}}}')})", "since the last sweep")],
        "s",
        kind="stat",
        steps=[(None, "green"), (180, "orange"), (600, "red")],
    ),
    panel(
        "Since the last resync",
        "Seconds since the last resync finished; over 1800 for 10 minutes is CallsyncResyncOverdue.",
        [query(f"time() - max({once(f'callsync_resync_last_timestamp_seconds{{{JOB}}}')})", "since the last resync")],
        "s",
        kind="stat",
        steps=[(None, "green"), (900, "orange"), (1800, "red")],
    ),
    panel(
        "Resync outcomes",
        "What resyncs found and did: sessions adopted or closed, channels changed, reconciles scheduled, skipped.",
        [
            query(
                f"sum by (outcome) ({once(f'increase(callsync_resync_outcomes_total{{{JOB}}}[{RATE}])', 'outcome')})",
                "{{outcome}}",
            )
        ],
        min=0,
    ),
]

ROWS = [
    ("Receiver (per web instance, summed)", RECEIVER),
    ("Queue and tasks", WORK),
    ("Stream's ceiling and upstream calls", UPSTREAM),
    ("Sessions, dead letters, the sweep", SESSIONS),
]


def grafana_panel(spec: dict[str, Any], panel_id: int, x: int, y: int) -> dict[str, Any]:
    kind = spec.get("kind", "timeseries")
    defaults: dict[str, Any] = {"unit": spec["unit"]}
    defaults.update({key: spec[key] for key in ("min", "max") if key in spec})
    if "steps" in spec:
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in spec["steps"]]}
    options: dict[str, Any] = {
        "tooltip": {"mode": "multi", "sort": "desc"},
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
    }
    if kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background"}
    return {
        "id": panel_id,
        "type": kind,
        "title": spec["title"],
        "description": spec["description"],
        "datasource": DS,
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": spec.get("overrides", [])},
        "options": options,
        "targets": [{**target, "refId": chr(ord("A") + i)} for i, target in enumerate(spec["targets"])],
    }


def textbox(name: str, label: str, value: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "query": value,
        "current": {"text": value, "value": value},
        "description": description,
    }


def variables() -> list[dict[str, Any]]:
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {}},
        {
            "name": "job",
            "label": "Job",
            "type": "query",
            "datasource": DS,
            "query": {"query": "label_values(callsync_redis_up, job)", "refId": "job"},
            "definition": "label_values(callsync_redis_up, job)",
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "current": {"text": "All", "value": "$__all"},
        },
        textbox("stream_ceiling", "Stream update ceiling (/s)", "5", "CALLSYNC_STREAM_UPDATE_RATE per second (300/m is 5)"),
        textbox("max_session_seconds", "Session limit (s)", "43200", "CALLSYNC_MAX_SESSION_SECONDS"),
    ]


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for title, specs in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for i, spec in enumerate(specs):
            panels.append(grafana_panel(spec, len(panels) + 1, (i % 3) * 8, y + (i // 3) * 8))
        y += ((len(specs) + 2) // 3) * 8
    return {
        "uid": "callsync",
        "title": "callsync",
        "description": "callsync: receiver, queue, tasks, Stream's ceiling, upstream calls, sessions, sweep (deploy/monitoring).",
        "tags": ["callsync"],
        "editable": True,
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": variables()},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
