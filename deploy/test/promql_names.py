"""Metric names in the PromQL of deploy/'s Grafana dashboard and alert rules, checked
against a live /metrics scrape (deploy/test/run.sh).

    promql_names.py METRICS_URL DASHBOARD_JSON ALERTS_YML

Prints every expression whose metric names the server does not expose and exits 1 if
any; `up` is the one series Prometheus adds itself. Needs PyYAML.
"""

import json
import re
import sys
import urllib.request

import yaml

# Series Prometheus makes for every target, not the server.
PROMETHEUS_SERIES = {"up"}
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "atan2", "inf", "nan",
}
IDENT = re.compile(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])")


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression reads: identifiers that are no function, keyword,
    label name, grouping label, duration or Grafana variable."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    # Grouping clauses go whole, so that `sum by (x) (...)` reads as a call of `sum`.
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text
    )
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    names = set()
    for m in IDENT.finditer(text):
        name = m.group(1)
        rest = text[m.end():].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        if name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def exposed(metrics_text: str) -> set[str]:
    """Series names in a Prometheus text exposition."""
    names = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def dashboard_exprs(path: str) -> list[tuple[str, str]]:
    with open(path) as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append((f"dashboard panel {p.get('title')!r}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\((\w+)", q or "")
        if m:
            out.append((f"dashboard variable {v.get('name')!r}", m.group(1)))
    return out


def alert_exprs(path: str) -> list[tuple[str, str]]:
    with open(path) as f:
        rules = yaml.safe_load(f)
    return [
        (f"alert {r.get('alert') or r.get('record')!r}", r["expr"])
        for g in rules["groups"]
        for r in g["rules"]
    ]


def self_test() -> None:
    """The parser finds what it must and nothing else (so the check can fail)."""
    cases = {
        'sum by (instance) (rate(ferrosoup_a_total{instance=~"$instance", x="y"}[$__rate_interval])) / sum(ferrosoup_b)': {"ferrosoup_a_total", "ferrosoup_b"},
        "8 * rate(ferrosoup_c_total[5m]) > 0.01 and on(instance) up == 1": {"ferrosoup_c_total", "up"},
        'histogram_quantile(0.99, sum without (worker) (rate(ferrosoup_d_bucket[1m])))': {"ferrosoup_d_bucket"},
    }
    for expr, want in cases.items():
        got = metric_names(expr)
        assert got == want, f"{expr!r}: {got} != {want}"


def main() -> int:
    metrics_url, dashboard, alerts = sys.argv[1:4]
    self_test()
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        have = exposed(r.read().decode()) | PROMETHEUS_SERIES
    exprs = dashboard_exprs(dashboard) + alert_exprs(alerts)
    bad = 0
    used = set()
    for where, expr in exprs:
        names = metric_names(expr)
        used |= names
        if not names:
            print(f"{where}: no metric name found in {expr!r}")
            bad += 1
        missing = names - have
        if missing:
            print(f"{where}: {sorted(missing)} not in {metrics_url}: {expr}")
            bad += 1
    print(f"{len(exprs)} expressions, {len(used)} metric names, all exposed" if not bad else f"{bad} expressions name metrics the server does not expose")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
