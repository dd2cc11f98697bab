#!/usr/bin/env bash
# scripts/test-registry.sh CMD...: starts a real Confluent-compatible Schema Registry
# (scripts/registry.sh: Apicurio Registry, in memory), runs CMD with
# ECST_TEST_SCHEMA_REGISTRY_URL pointing at it, and stops the registry whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
export ECST_REGISTRY_DIR="${ECST_REGISTRY_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/ecst-registry-test.XXXXXX")}"
trap 'scripts/registry.sh stop || true; rm -rf "$ECST_REGISTRY_DIR"' EXIT
env_lines=$(scripts/registry.sh start)
set -a
eval "$env_lines"
set +a
echo "test-registry: real registry at $ECST_TEST_SCHEMA_REGISTRY_URL" >&2
"$@"
