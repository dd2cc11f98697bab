#!/usr/bin/env bash
# scripts/test-kafka.sh CMD...: starts a real Apache Kafka broker (scripts/kafka.sh), runs CMD
# with ECST_TEST_BROKERS and ECST_TEST_SASL_BROKERS pointing at it, and stops the broker
# whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
export ECST_KAFKA_DIR="${ECST_KAFKA_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/ecst-kafka-test.XXXXXX")}"
trap 'scripts/kafka.sh stop || true; rm -rf "$ECST_KAFKA_DIR"' EXIT
env_lines=$(scripts/kafka.sh start)
set -a
eval "$env_lines"
set +a
echo "test-kafka: real broker at $ECST_TEST_BROKERS (SASL at $ECST_TEST_SASL_BROKERS)" >&2
"$@"
