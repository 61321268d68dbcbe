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
