#!/usr/bin/env bash
# bench/debezium/run.sh [FLAGS...]: ecst's relay side by side with Debezium, on one PostgreSQL
# and one real Kafka broker. It fetches Kafka Connect's and Debezium's jars once (pom.xml, through
# mvn, into a cache outside the work tree), starts a broker with scripts/kafka.sh unless
# ECST_BENCH_BROKERS names one, runs the Go driver in this directory with FLAGS, and stops the
# broker it started on every exit path. The driver starts and stops Kafka Connect itself.
#
#   bench/debezium/run.sh                                  # drain and steady, Debezium and ecst
#   bench/debezium/run.sh -workloads steady -rate 10000    # see `go run . -h` for the flags
#   bench/debezium/run.sh fetch                            # only fetch the jars
#
# environment (defaults):
#   ECST_BENCH_BROKERS               a running broker; unset: start one with scripts/kafka.sh on
#                                    ECST_KAFKA_PORT / ECST_KAFKA_CONTROLLER_PORT / ECST_KAFKA_SASL_PORT
#   ECST_BENCH_CONNECT_PORT=$((ECST_KAFKA_PORT + 3))  Kafka Connect's REST port (ECST_KAFKA_PORT
#                                    defaults to 19092)
#   ECST_BENCH_DATABASE_URL          a PostgreSQL with wal_level=logical; unset: a throwaway one
#   ECST_BENCH_BROKER_PID            the broker's pid, for its CPU time (set when run.sh starts it)
#   ECST_DEBEZIUM_CACHE=$HOME/.cache/ecst/debezium   jar cache: <cache>/<pom sha256>/libs
#   ECST_BENCH_KEEP=1                keep Connect's files (properties, offsets, connect.log)
#   JAVA_HOME                        java 17 or newer; otherwise java on PATH
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
pom=$here/pom.xml

svc=run.sh
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

want=$(sha256sum "$pom")
want=${want%% *}
cache_root=${ECST_DEBEZIUM_CACHE:-${HOME:?HOME is not set}/.cache/ecst/debezium}
vdir=$cache_root/${want:0:16}
libs=$vdir/libs

# fetch: the jars of pom.xml into $libs, once (scripts/lib.sh).
fetch() {
	mvn_fetch "$want" "Kafka Connect and Debezium" "connect-runtime-*.jar" "debezium-connector-postgres-*.jar"
}

fetch
[[ ${1:-} == fetch ]] && exit 0

export ECST_BENCH_CONNECT_LIBS=$libs
export ECST_BENCH_CONNECT_PORT=${ECST_BENCH_CONNECT_PORT:-$((${ECST_KAFKA_PORT:-19092} + 3))}

if [[ -z ${ECST_BENCH_BROKERS:-} ]]; then
	if [[ -n ${ECST_KAFKA_DIR:-} ]]; then
		trap '"$root/scripts/kafka.sh" stop || true' EXIT # the caller's dir: keep it
	else
		ECST_KAFKA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ecst-kafka-bench.XXXXXX")
		trap '"$root/scripts/kafka.sh" stop || true; rm -rf "$ECST_KAFKA_DIR"' EXIT
	fi
	export ECST_KAFKA_DIR
	env_lines=$("$root/scripts/kafka.sh" start)
	eval "$env_lines"
	export ECST_BENCH_BROKERS=$ECST_TEST_BROKERS
	# The driver counts the broker's CPU time (/proc/<pid>/stat) beside PostgreSQL's and its own.
	ECST_BENCH_BROKER_PID=$(<"$ECST_KAFKA_DIR/kafka.pid")
	export ECST_BENCH_BROKER_PID
	log "real broker at $ECST_BENCH_BROKERS"
fi

cd "$here"
go build -o "$vdir/bench-debezium" .
"$vdir/bench-debezium" -connect-port "$ECST_BENCH_CONNECT_PORT" "$@"
