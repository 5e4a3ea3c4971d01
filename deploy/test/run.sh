#!/usr/bin/env bash
# Checks of deploy/ with the real programs (run by .ci/run; Debian packages prometheus and
# kubectl's kustomize, PyPI's kubernetes-validate):
#   - promtool: the Prometheus config and alert rules load; the rules' unit tests
#     (alerts_test.yml) fire the alerts on made-up series and stay quiet otherwise;
#   - Prometheus started with deploy/prometheus/ (a copy whose target is this test's
#     server) scrapes a running ferrosoup: its query API returns ferrosoup_ series, `up`
#     is 1 and every alert rule evaluates without error;
#   - every PromQL expression of the Grafana dashboard and of the alert rules names only
#     metrics the live /metrics exposes; the dashboard uses the provisioned datasource;
#   - `kubectl kustomize deploy/k8s` renders and passes kubernetes-validate --strict, and
#     the ferrosoup.toml of its ConfigMap (and deploy/ferrosoup.toml) pass `config check`.
#
#   deploy/test/run.sh            (FERROSOUP_BIN, default target/debug/ferrosoup;
#                                  PYTHON with PyYAML + kubernetes-validate, default python3)
# The last line is "N passed, N failed"; the exit code is 0 only when all passed.
set -uo pipefail
cd "$(dirname "$0")/../.."

BIN=${FERROSOUP_BIN:-target/debug/ferrosoup}
PYTHON=${PYTHON:-python3}
K8S_VERSION=${K8S_VERSION:-1.32.0}
tmp=$(mktemp -d -t ferrosoup-deploy-XXXXXX)
pids=()
passed=0
failed=0

cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  if [ "$failed" -eq 0 ]; then rm -rf "$tmp"; else echo "logs kept in $tmp"; fi
}
trap cleanup EXIT

log() { echo "$(date +%H:%M:%S.%3N) $*"; }

# check NAME COMMAND...: runs the command, its output in $tmp/<n>.log, shown on failure.
check() {
  local name=$1
  shift
  local out="$tmp/check-$((passed + failed)).log"
  local started=$SECONDS
  if "$@" >"$out" 2>&1; then
    passed=$((passed + 1))
    log "PASS $name ($((SECONDS - started)) s)"
  else
    failed=$((failed + 1))
    log "FAIL $name"
    sed 's/^/    /' "$out" | tail -40
  fi
}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for SECONDS COMMAND...: retries the command every 0.2 s until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

for tool in "$BIN" prometheus promtool kubectl curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "missing $tool (cargo build -p ferrosoup-server; apt-get install prometheus kubectl curl)" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
done

# ---- the compose topology: the ferrosoup service's config file and environment ---------
# compose_env [SERVICE]: the environment of docker-compose.yml's ferrosoup service (or
# SERVICE), one NAME=value a line, with test values for what compose takes from the user's
# shell (${NAME...}) and FERROSOUP_CONFIG mapped from the container path to the file
# compose mounts there.
compose_env() {
  SERVICE=${1:-ferrosoup} "$PYTHON" - <<'PY'
import os, re, yaml
from pathlib import Path
compose = yaml.safe_load(open("deploy/docker-compose.yml"))
svc = compose["services"][os.environ["SERVICE"]]
test = {"ANNOUNCED_IP": "127.0.0.1", "TURN_SECRET": "deploy-test-turn-secret",
        "ADMIN_KEY": "", "AUTH_SECRET": "", "REDIS_URL": ""}
def fill(value):
    return re.sub(r"\$\{(\w+)(?::[?-][^}]*)?\}", lambda m: test[m.group(1)], str(value))
env = {k: fill(v) for k, v in svc["environment"].items()}
mounts = dict(reversed(v.split(":")[:2]) for v in svc["volumes"])
host_file = Path("deploy") / mounts[env["FERROSOUP_CONFIG"]]
assert host_file.is_file(), host_file
env["FERROSOUP_CONFIG"] = str(host_file)
for k, v in env.items():
    print(f"{k}={v}")
PY
}
compose_matches_the_image() {
  "$PYTHON" - <<'PY'
import re, yaml
from pathlib import Path
compose = yaml.safe_load(open("deploy/docker-compose.yml"))
svc = compose["services"]["ferrosoup"]
path = svc["environment"]["FERROSOUP_CONFIG"]
assert f"./ferrosoup.toml:{path}:ro" in svc["volumes"], svc["volumes"]
docker = open("deploy/Dockerfile").read()
assert f"COPY deploy/ferrosoup.toml {path}" in docker, "the image carries the same file"
assert re.search(rf"^ENV FERROSOUP_CONFIG={re.escape(path)}$", docker, re.M), "and reads it"
for name, s in compose["services"].items():
    for v in s.get("volumes", []):
        source = v.split(":")[0]
        if source.startswith("."):
            assert (Path("deploy") / source).exists(), (name, source)
print("compose and the image read", path)
PY
}
check "docker-compose.yml's ferrosoup service and the Dockerfile's image read deploy/ferrosoup.toml; every file compose mounts exists" \
  compose_matches_the_image
compose_env >"$tmp/compose.env" || echo "FERROSOUP_CONFIG=compose-env-failed" >"$tmp/compose.env"
check "ferrosoup config check with the compose service's file and environment" \
  env $(cat "$tmp/compose.env") "$BIN" config check
compose_env ferrosoup-2 >"$tmp/compose-2.env" || echo "FERROSOUP_CONFIG=compose-env-failed" >"$tmp/compose-2.env"
second_node_is_a_cluster_node() {
  env $(cat "$tmp/compose-2.env") "$BIN" config print >"$tmp/compose-2-config.txt" &&
    grep -q '^node_id = "node-2" *# from environment' "$tmp/compose-2-config.txt" &&
    grep -q '^# redis_url = .*(set, from environment' "$tmp/compose-2-config.txt" &&
    grep -q '^port = 3002 *# from environment' "$tmp/compose-2-config.txt"
}
check "the cluster profile's second node passes config check: node-2 on port 3002 with REDIS_URL" \
  second_node_is_a_cluster_node
reads_the_file_and_the_environment() {
  env $(cat "$tmp/compose.env") "$BIN" config print >"$tmp/compose-config.txt" &&
    grep -q '^allowed_origins = .*# from file' "$tmp/compose-config.txt" &&
    grep -q '^announced_ip = \["127.0.0.1"\] *# from environment' "$tmp/compose-config.txt"
}
check "the compose service's settings come from ferrosoup.toml, ANNOUNCED_IP from its environment" \
  reads_the_file_and_the_environment

# ---- ferrosoup as compose runs it (this test's ports and a 0 s drain over the file's), ----
# with a signaling request so that the request counters have series
port=$(free_port)
rtc_min=$((45000 + RANDOM % 90 * 10))
env $(cat "$tmp/compose.env") \
  PORT=$port LISTEN_IP=127.0.0.1 NUM_WORKERS=2 RTC_MIN_PORT=$rtc_min RTC_MAX_PORT=$((rtc_min + 9)) \
  DRAIN_SECONDS=0 RUST_LOG=warn "$BIN" >"$tmp/ferrosoup.log" 2>&1 &
pids+=($!)
check "ferrosoup answers /health/live on 127.0.0.1:$port" \
  wait_for 10 curl -sf "http://127.0.0.1:$port/health/live"
check "ferrosoup health (the image's HEALTHCHECK) exits 0 against it" \
  env PORT="$port" LISTEN_IP=127.0.0.1 "$BIN" health --path /health/live
check "one signaling request (createRoom) over the WebSocket" \
  "$PYTHON" deploy/test/ws_request.py "ws://127.0.0.1:$port/ws" createRoom '{"roomId":"deploy-test"}'

check "ferrosoup config check accepts deploy/ferrosoup.toml" \
  "$BIN" config check --config deploy/ferrosoup.toml
unknown_key_is_refused() {
  printf 'port = 3000\nmax_romos = 1\n' >"$tmp/bad.toml"
  ! "$BIN" config check --config "$tmp/bad.toml" 2>"$tmp/bad.err" &&
    grep -q 'unknown key `max_romos`' "$tmp/bad.err"
}
check "ferrosoup config check refuses a file with an unknown key, naming it" unknown_key_is_refused

# ---- promtool -----------------------------------------------------------------------
mkdir -p "$tmp/prometheus"
cp deploy/prometheus/alerts.yml "$tmp/prometheus/"
# The test copy: this server as the target, a fast scrape and evaluation.
sed -e "s/127\.0\.0\.1:3000/127.0.0.1:$port/" \
  -e 's/scrape_interval: 15s/scrape_interval: 1s/' \
  -e 's/evaluation_interval: 15s/evaluation_interval: 1s/' \
  deploy/prometheus/prometheus.yml >"$tmp/prometheus/prometheus.yml"
check "the test copy of prometheus.yml differs from deploy/'s only in target and intervals" \
  bash -c "diff deploy/prometheus/prometheus.yml $tmp/prometheus/prometheus.yml | grep -c '^>' | grep -qx 3"
check "promtool check config deploy/prometheus/prometheus.yml" \
  promtool check config deploy/prometheus/prometheus.yml
check "promtool test rules deploy/test/alerts_test.yml (each alert fires, and not on healthy series)" \
  promtool test rules deploy/test/alerts_test.yml

# ---- Prometheus scraping ferrosoup --------------------------------------------------
prom_port=$(free_port)
prometheus --config.file="$tmp/prometheus/prometheus.yml" --storage.tsdb.path="$tmp/prometheus/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$prom_port/api/v1"
has_ferrosoup_series() {
  curl -sf --get "$api/query" --data-urlencode 'query=count({__name__=~"ferrosoup_.+", job="ferrosoup"})' |
    "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; n=int(r[0]["value"][1]) if r else 0; print(n, "series"); sys.exit(0 if n >= 40 else 1)'
}
check "Prometheus (deploy/ config) scrapes ferrosoup: its query API returns ferrosoup_ series" \
  wait_for 30 has_ferrosoup_series
check "up{job=\"ferrosoup\"} is 1" \
  bash -c "curl -sf --get '$api/query' --data-urlencode 'query=up{job=\"ferrosoup\"}' | grep -q '\"value\":\[[0-9.]*,\"1\"\]'"
rules_ok() {
  curl -sf "$api/rules" | "$PYTHON" -c '
import json, sys, yaml
want = sum(len(g["rules"]) for g in yaml.safe_load(open("deploy/prometheus/alerts.yml"))["groups"])
rules = [r for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]]
bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
print(len(rules), "rules loaded of", want, "; not ok:", bad)
sys.exit(0 if len(rules) == want and not bad else 1)'
}
check "every alert rule is loaded and evaluates without error" wait_for 15 rules_ok
check "the dashboard's and the alerts' PromQL name only metrics /metrics exposes" \
  "$PYTHON" deploy/test/promql_names.py "http://127.0.0.1:$port/metrics" \
  deploy/grafana/dashboards/ferrosoup.json deploy/prometheus/alerts.yml
check "the dashboard queries the provisioned datasource (uid ferrosoup-prometheus)" \
  "$PYTHON" -c '
import json, re, yaml
uid = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))["datasources"][0]["uid"]
text = open("deploy/grafana/dashboards/ferrosoup.json").read()
uids = set(re.findall(r"\"uid\": \"([^\"]+)\"", text)) - {json.loads(text)["uid"]}
assert uids == {uid}, (uids, uid)'

# ---- Kubernetes manifests -----------------------------------------------------------
check "kubectl kustomize deploy/k8s renders" \
  bash -c "kubectl kustomize deploy/k8s >'$tmp/k8s.yaml'"
# The ConfigMap's ferrosoup.toml with the Secret's keys as the pod gets them: filled in
# (test values), `config check` passes; as shipped (empty), it refuses (TURN_URLS without
# TURN_SECRET), as secret.yaml says.
configmap_toml_passes_check() {
  "$PYTHON" -c 'import sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1]))}
open(sys.argv[2], "w").write(docs["ConfigMap"]["data"]["ferrosoup.toml"])
assert set(docs["Secret"]["stringData"]) == {"AUTH_SECRET", "TURN_SECRET", "ADMIN_KEY"}' \
    "$tmp/k8s.yaml" "$tmp/k8s-ferrosoup.toml" || return 1
  env AUTH_SECRET=0123456789abcdef0123456789abcdef TURN_SECRET=turn-test ADMIN_KEY=admin-test \
    "$BIN" config check --config "$tmp/k8s-ferrosoup.toml" || return 1
  ! env AUTH_SECRET= TURN_SECRET= ADMIN_KEY= "$BIN" config check --config "$tmp/k8s-ferrosoup.toml"
}
check "the rendered ConfigMap's ferrosoup.toml passes ferrosoup config check with the Secret filled in" \
  configmap_toml_passes_check
check "the rendered manifests pass kubernetes-validate --strict (Kubernetes $K8S_VERSION)" \
  "$PYTHON" -m kubernetes_validate --strict --quiet -k "$K8S_VERSION" "$tmp/k8s.yaml"
check "terminationGracePeriodSeconds > DRAIN_SECONDS + preStop; probes on /health/ready and /health/live" \
  "$PYTHON" -c "
import yaml
import tomllib
docs = {d['kind']: d for d in yaml.safe_load_all(open('$tmp/k8s.yaml'))}
drain = tomllib.loads(docs['ConfigMap']['data']['ferrosoup.toml'])['drain_seconds']
pod = docs['DaemonSet']['spec']['template']['spec']
c = pod['containers'][0]
pre = c['lifecycle']['preStop']['sleep']['seconds']
assert pod['terminationGracePeriodSeconds'] > drain + pre, (pod['terminationGracePeriodSeconds'], drain, pre)
assert pod['hostNetwork'] is True
assert c['readinessProbe']['httpGet']['path'] == '/health/ready'
assert c['livenessProbe']['httpGet']['path'] == '/health/live'
assert {'AUTH_SECRET', 'TURN_SECRET', 'ADMIN_KEY'} <= set(docs['Secret']['stringData'])
assert docs['PodDisruptionBudget']['spec']['selector'] == docs['DaemonSet']['spec']['selector']"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
