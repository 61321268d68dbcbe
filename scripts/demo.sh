#!/usr/bin/env bash
# The local demo: scim-relay's main job end to end, with no AWS account.
#
#  1. starts moto_server (as Secrets Manager and SNS) and the Entra simulator
#     (whose provisioning job is in quarantine, as after a forgotten renewal);
#  2. stores a new SCIM token in the target secret, as an admin would;
#  3. runs the real `scim-relay` binary under cargo-lambda's Lambda runtime
#     emulator and invokes it with a schedule event;
#  4. prints the result, the alert it sent, and what Entra now holds.
#
# Needs only Rust and python3; installs its tools into .venv (pinned).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/venv.sh"
venv="$root/.venv"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 600); do
    if "$venv/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "demo: nothing listens on port $1 ($2)" >&2; exit 1
}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

TENANT=11111111-2222-3333-4444-555555555555
CLIENT=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee
SP=99999999-8888-7777-6666-555555555555
JOB=Apple.0a1b2c3d4e5f.9f8e7d6c5b4a
# Demo-only secrets: the canary marker lets the test run prove they never print.
CLIENT_SECRET="CANARY-demo-graph-client-secret"
TOKEN="CANARY-demo-scim-token-$(date +%s)"

step "building scim-relay and the Entra simulator"
cargo build --quiet --bin scim-relay && cargo build --quiet -p entra-sim --bin entra-sim

moto_port=$(free_port); sim_port=$(free_port); rt_port=$(free_port)
step "starting moto_server (Secrets Manager + SNS) on :$moto_port and the Entra simulator on :$sim_port"
"$venv/bin/python" "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 & pids+=($!)
"$root/target/debug/entra-sim" --listen "127.0.0.1:$sim_port" --client-id "$CLIENT" --client-secret "$CLIENT_SECRET" \
  --job "$SP/$JOB=Quarantine" --accept-all >"$work/sim.out" 2>"$work/sim.log" & pids+=($!)
wait_port "$moto_port" moto_server
wait_port "$sim_port" entra-sim

export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_EC2_METADATA_DISABLED=true

step "creating the Graph client secret, the SNS topic, and storing a new SCIM token (as the admin would)"
TOPIC=$(CLIENT_SECRET="$CLIENT_SECRET" TOKEN="$TOKEN" SINK="http://127.0.0.1:$sim_port/sns-sink" "$venv/bin/python" - <<'PY'
import json, os, boto3
sm = boto3.client("secretsmanager")
sns = boto3.client("sns")
sm.create_secret(Name="scim-relay/graph-client-secret", SecretString=os.environ["CLIENT_SECRET"])
sm.create_secret(Name="scim-relay/abm")
topic = sns.create_topic(Name="scim-relay-alerts")["TopicArn"]
sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=os.environ["SINK"])
v = sm.put_secret_value(SecretId="scim-relay/abm",
                        SecretString=json.dumps({"token": os.environ["TOKEN"], "expires_at": "2027-11-20"}))
print(topic)
PY
)
echo "stored version of scim-relay/abm: {\"token\": \"<hidden>\", \"expires_at\": \"2027-11-20\"}"

cat >"$work/env" <<ENV
SCIM_RELAY_SECRET_IDS=scim-relay/abm
ENTRA_TENANT_ID=$TENANT
ENTRA_CLIENT_ID=$CLIENT
ENTRA_CLIENT_SECRET_ID=scim-relay/graph-client-secret
ENTRA_SERVICE_PRINCIPAL_ID=$SP
ALERT_TOPIC_ARN=$TOPIC
GRAPH_ENDPOINT=http://127.0.0.1:$sim_port
LOGIN_ENDPOINT=http://127.0.0.1:$sim_port
AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=demo
AWS_SECRET_ACCESS_KEY=demo
AWS_EC2_METADATA_DISABLED=true
RUST_LOG=info
ENV

step "starting cargo-lambda's runtime emulator with the scim-relay binary on :$rt_port"
PATH="$venv/bin:$PATH" cargo lambda watch --ignore-changes --quiet --timeout 60 --bin scim-relay \
  --invoke-address 127.0.0.1 --invoke-port "$rt_port" --env-file "$work/env" >"$work/lambda.log" 2>&1 & pids+=($!)
wait_port "$rt_port" "cargo lambda watch"

step "invoking it with an EventBridge Scheduler event"
cat >"$work/event.json" <<'JSON'
{"version":"0","id":"2f1f3b3c-demo","detail-type":"Scheduled Event","source":"aws.scheduler",
 "account":"123456789012","time":"2026-11-23T06:00:00Z","region":"us-east-1",
 "resources":["arn:aws:scheduler:us-east-1:123456789012:schedule/default/scim-relay"],"detail":"{}"}
JSON
PATH="$venv/bin:$PATH" cargo lambda invoke scim-relay --invoke-address 127.0.0.1 --invoke-port "$rt_port" \
  --data-file "$work/event.json" >"$work/result.json" 2>"$work/invoke.err" || {
    echo "demo: the invocation failed:" >&2; cat "$work/invoke.err" "$work/lambda.log" >&2; exit 1; }

step "result returned by the function"
"$venv/bin/python" -m json.tool "$work/result.json"

step "the function's log (one line per step and per outcome)"
grep -E "scim-relay|INFO|WARN|ERROR" "$work/lambda.log" | grep -vE "Compiling|Finished|Running" | tail -n 12 || true

step "alert sent to SNS (as delivered to the topic's subscriber)"
"$venv/bin/python" - "http://127.0.0.1:$sim_port/_sim/sns" <<'PY'
import json, sys, urllib.request
msgs = json.load(urllib.request.urlopen(sys.argv[1]))
for m in msgs:
    print("Subject:", m.get("Subject"))
    print(m.get("Message"))
if not msgs:
    sys.exit("demo: no alert was delivered")
PY

step "what Entra holds now (the simulator's view; the token itself is never shown)"
"$venv/bin/python" - "http://127.0.0.1:$sim_port/_sim/state" <<'PY'
import json, sys, urllib.request
print(json.dumps(json.load(urllib.request.urlopen(sys.argv[1])), indent=2))
PY

step "labels and tags on the secret"
"$venv/bin/python" - <<'PY'
import boto3
d = boto3.client("secretsmanager").describe_secret(SecretId="scim-relay/abm")
for v, labels in d["VersionIdsToStages"].items():
    print(f"version {v}: {', '.join(labels)}")
for t in sorted(d.get("Tags", []), key=lambda t: t["Key"]):
    print(f"tag {t['Key']} = {t['Value']}")
PY

"$venv/bin/python" - "$work/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
if r["outcome"] != "applied" or not r["quarantine_cleared"]:
    sys.exit(f"demo: expected the token applied and the quarantine cleared, got {r['outcome']}")
print("\ndemo: OK: the new token is live in Entra, the quarantine is cleared, and the admin was told.")
PY
