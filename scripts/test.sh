#!/usr/bin/env bash
# The test command: installs what the tests need (a pinned Python venv with
# moto_server, cargo-lambda and cfn-lint) and runs everything:
#   unit tests, integration tests against moto_server and the Entra
#   simulator, the local demo end to end, and the template lint.
# Any failure fails the whole run. Every line of output is also checked for
# the canary tokens the tests use: a secret in the output fails the run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/venv.sh"
export SCIM_RELAY_VENV="$root/.venv"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

run() {
  echo "==> $*"
  "$@" 2>&1 | tee -a "$log"
  return "${PIPESTATUS[0]}"
}

run cargo test --workspace
run "$root/scripts/demo.sh"
if [ -f "$root/template.yaml" ]; then
  run "$root/.venv/bin/cfn-lint" "$root/template.yaml"
  # SAM's own lint; offline: it needs no AWS account, region or credentials.
  run env SAM_CLI_TELEMETRY=0 "$root/.venv/bin/sam" validate --lint --template-file "$root/template.yaml"
  # The deployment artifact, built the way `sam build` builds it for Lambda
  # (cargo lambda build --release --arm64 --bin scim-relay), into target/.
  # Needs Rust's aarch64 standard library; where rustup cannot add it, skip.
  if rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 \
    || rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    run env PATH="$root/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0 "$root/.venv/bin/sam" build \
      --template-file "$root/template.yaml" --build-dir "$root/target/sam-build"
    artifact="$root/target/sam-build/ScimRelayFunction/bootstrap"
    # An ELF whose e_machine (offset 18) is 0xb7: AArch64.
    [ "$(od -An -tx1 -j18 -N2 "$artifact" | tr -d ' \n')" = "b700" ] \
      || { echo "FAILED: $artifact is not an arm64 Lambda bootstrap" >&2; exit 1; }
    echo "==> arm64 deployment artifact: $artifact ($(wc -c <"$artifact") bytes)"
  else
    echo "==> SKIPPED the arm64 build: rustup could not add the aarch64-unknown-linux-gnu target here"
  fi
fi

if grep -q "CANARY-" "$log"; then
  echo "FAILED: a canary secret appeared in the test output:" >&2
  grep -n "CANARY-" "$log" | sed 's/CANARY-[A-Za-z0-9._-]*/CANARY-[hidden]/g' | head -5 >&2
  exit 1
fi
# Sum every cargo "test result:" line into one closing line.
read -r passed failed < <(awk '/^test result: / {
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
  } END { print p + 0, f + 0 }' "$log")
if [ "${passed:-0}" -eq 0 ]; then
  echo "FAILED: no test ran" >&2
  exit 1
fi
echo "==> all tests passed, the demo ran, the template is clean, and no canary secret was printed"
echo "tests: ${passed} passed, ${failed:-0} failed"
