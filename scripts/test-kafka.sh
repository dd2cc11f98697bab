#!/usr/bin/env bash
# scripts/test-kafka.sh CMD...: starts a real Apache Kafka broker (scripts/kafka.sh), runs CMD
# with ECST_TEST_BROKERS and ECST_TEST_SASL_BROKERS pointing at it, and stops the broker
# whatever happens.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
svc=test-kafka
run_with scripts/kafka.sh ECST_KAFKA_DIR "$@"
