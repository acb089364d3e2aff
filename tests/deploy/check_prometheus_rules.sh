#!/usr/bin/env bash
# promtool on deploy/prometheus: the rules parse and lint clean, their unit
# tests pass, the example config is valid. Exit 77 (skipped) without promtool.
set -euo pipefail
dir=${1:?usage: check_prometheus_rules.sh DEPLOY_PROMETHEUS_DIR}
if ! command -v promtool >/dev/null; then
  echo "promtool is not installed (deploy/install-deps.sh installs prometheus): skipped"
  exit 77
fi
cd "$dir"
promtool check rules fairwatch.rules.yml
promtool test rules fairwatch.rules.test.yml
promtool check config prometheus.yml
