#!/usr/bin/env bash
# scripts/test-registry.sh CMD...: starts a real Confluent-compatible Schema Registry
# (scripts/registry.sh: Apicurio Registry, in memory), runs CMD with
# ECST_TEST_SCHEMA_REGISTRY_URL pointing at it, and stops the registry whatever happens.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
svc=test-registry
run_with scripts/registry.sh ECST_REGISTRY_DIR "$@"
