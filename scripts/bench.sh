#!/usr/bin/env bash
# The benchmark (issue 7): builds release, then measures, through a fake
# Lambda Runtime API and against moto_server + the Entra simulator:
#   - cold start (spawn -> first poll of the Runtime API), against a Python
#     floor peer (imports boto3 + requests, builds a Secrets Manager client,
#     polls the same API) measured in the same run;
#   - peak RSS of a normal sync, and of 10 / 100 / 1,000 targets;
#   - the release arm64 bootstrap's size (and the x86_64 binary's);
#   - 1,000 targets in one scheduled run with 50 ms per Graph call and 429
#     bursts: duration against the ideal (Graph calls x latency / concurrency),
#     targets lost, Graph tokens fetched, reads per secret.
# Prints min / median / max and the ratio to each goal; raw figures go to
# target/bench/latest.json. Options are passed to scripts/bench_run.py
# (--help lists them), e.g. `./scripts/bench.sh --concurrency 4,16`.
#
# Needs only Rust and python3 (tools go into .venv, pinned). Takes about
# 10 minutes on 2 cores, most of it the 1,000-target runs. Timing figures
# are only meaningful on an otherwise idle machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/venv.sh"
export PATH="$root/.venv/bin:$PATH"
case "${1:-}" in -h|--help) exec "$root/.venv/bin/python" "$root/scripts/bench_run.py" --help ;; esac

echo "==> building release: scim-relay and entra-sim (x86_64)" >&2
cargo build --release --quiet --bin scim-relay -p scim-relay
cargo build --release --quiet -p entra-sim --bin entra-sim

echo "==> building the release arm64 Lambda bootstrap (cargo lambda build --release --arm64)" >&2
arm64=""
skip=""
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
   && ! rustup target add aarch64-unknown-linux-gnu >&2; then
  skip="rustup target add aarch64-unknown-linux-gnu failed (offline?)"
elif ! cargo lambda build --release --arm64 --bin scim-relay >&2; then
  skip="cargo lambda build --release --arm64 failed (see above)"
else
  arm64="$root/target/lambda/scim-relay/bootstrap"
fi
if [ -n "$skip" ]; then
  echo "bench: SKIPPING the arm64 size figure: $skip" >&2
fi

exec "$root/.venv/bin/python" "$root/scripts/bench_run.py" \
  --relay "$root/target/release/scim-relay" --sim "$root/target/release/entra-sim" \
  --arm64 "$arm64" --arm64-skip-reason "$skip" "$@"
