#!/usr/bin/env bash
# scripts/kafka.sh: a real single-node Apache Kafka broker (KRaft, broker+controller in one
# JVM) on loopback, for the tests that run against real Kafka. The jars come from Maven Central
# through mvn (scripts/kafka/pom.xml); no tarball, no Docker. Needs bash, java 17+, mvn and
# coreutils. `scripts/kafka.sh help` lists the commands and settings.
#
#   set -a; eval "$(scripts/kafka.sh start)"; set +a   # exports ECST_TEST_BROKERS, ECST_TEST_SASL_BROKERS
#   go test ./...
#   scripts/kafka.sh restart-broker                    # same data, same ports
#   scripts/kafka.sh stop
#
# Listeners: PLAINTEXT 127.0.0.1:19092 (clients and inter-broker), SASL_PLAINTEXT
# 127.0.0.1:19094 (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; user ecst, password ecst-secret),
# CONTROLLER 127.0.0.1:19093. No authorizer: every authenticated user may do anything.
#
# Kafka version: 4.4.0, pinned in scripts/kafka/pom.xml (<kafka.version>). It was the newest
# release on Maven Central when this was written (its maven-metadata.xml <release> was 4.4.0;
# the "latest seen 4.3.1" in /work/shared/KAFKA.md was out of date). 4.x gave no trouble, so
# there is no fallback to 3.9.x. Going back to 3.9.x needs another logging binding
# (slf4j-reload4j + reload4j) and a log4j 1 config; that was not tried here.
#
# Facts checked by running them (2026-11-24; OpenJDK 17.0.15, Maven 3.8.7, 2 cores, franz-go
# v1.22.2 as the client). They correct or confirm /work/shared/KAFKA.md:
# - kafka_2.13:4.4.0 already brings log4j-api and log4j-core 2.25.5 (through kafka-server) and
#   slf4j-api 1.7.36. The only missing piece is the SLF4J 1 binding log4j-slf4j-impl (NOT
#   log4j-slf4j2-impl). Without it SLF4J falls back to NOP: the broker runs but logs nothing,
#   so "Kafka Server started" never appears.
# - With the binding: 45 jars, 43 MB in <cache>/4.4.0/libs (KAFKA.md's 40-60 MB guess holds).
#   A first fetch with an empty ~/.m2 took about 3 s here and filled ~/.m2 with 65 MB. Later
#   fetches never run mvn (the stamp file <cache>/4.4.0/fetched holds the pom's sha256).
# - Main classes kafka.tools.StorageTool and kafka.Kafka: confirmed. With a static
#   controller.quorum.voters, `format` works without --standalone. Adding --standalone is an
#   error ("You cannot specify controller.quorum.voters and format the node with
#   --initial-controllers or --standalone"). Formatting a second time fails unless
#   --ignore-formatted is given, so this script skips format when data/meta.properties exists.
# - `format --add-scram 'SCRAM-SHA-256=[name=U,password=P]'` (and SCRAM-SHA-512) works at
#   metadata.version 4.4-IV2. SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN (a user_<name> entry in the
#   listener's JAAS config) all log in and list topics; a wrong password gets
#   SASL_AUTHENTICATION_FAILED. The users survive restart-broker (SCRAM users live in the
#   metadata log).
# - transaction.state.log.min.isr: KAFKA.md's claim is WRONG for this version. With the default
#   of 2 on one node, a transaction still committed. Since Kafka 3.7 (KAFKA-15583) the broker
#   uses min(min.insync.replicas, number of replicas) as the effective min ISR. It is set to 1
#   anyway, so the config says what is meant.
# - segment.bytes below 1 MiB is refused in 4.x: confirmed ("Value must be at least 1048576").
# - Compaction works with the cleaner settings below plus these topic settings: segment.ms=100,
#   min.cleanable.dirty.ratio=0.01. 20 versions of 3 keys came down to the 3 latest within
#   0.5 s, after one more record was appended so that the active segment rolled.
# - Readiness: kafka.server.KafkaRaftServer logs "Kafka Server started". That happened ~1.5 s
#   after JVM start on fresh storage, and ~3 s on a restart with data. start is ready ~2 s
#   after it is run (cached jars, including format). The script also sends an ApiVersions v0
#   request to both client listeners. 4.4 still answers v0, and a SASL listener answers it
#   before authentication.
# - SIGTERM gives a clean shutdown in under a second (on restart the log says "clean shutdown
#   file was found"). After a SIGKILL, the next start takes ~11 s: the controller first waits
#   out broker.session.timeout.ms (9 s) to fence the dead incarnation.
# - log4j2's own JVM shutdown hook stops logging before Kafka's shutdown hook is done;
#   log4j2.properties sets shutdownHook=disable so the end of a shutdown is logged.
# - Broker RSS: ~230 MB right after start, ~275 MB after a small workload (heap -Xms512m
#   -Xmx1g G1, as in KAFKA.md: reserved, not touched).
#
# Pitfalls (and those of scripts/lib.sh, which manages the process):
# - Without ECST_KAFKA_DIR, the temp state dir is found again through
#   ${TMPDIR:-/tmp}/ecst-kafka-<ECST_KAFKA_PORT>.dir. Run stop/status/restart-broker with the
#   same ECST_KAFKA_PORT and TMPDIR as start. Brokers on different ports can run side by side.
# - The internal topics have 1 partition (offsets, transactions), to keep the first group or
#   transaction fast. Group and transaction behaviour does not depend on that count.
set -euo pipefail

usage() {
	cat >&2 <<'EOF'
usage: scripts/kafka.sh <command>

  fetch           resolve the broker jars with mvn into the cache (once; later calls are instant)
  start           fetch if needed, format storage, start the broker, wait until it answers;
                  prints ECST_TEST_BROKERS=... and ECST_TEST_SASL_BROKERS=... on stdout
  stop            stop the broker (SIGTERM, then SIGKILL after 30 s); removes a temp state dir
  restart-broker  stop and start the same broker on the same data (simulates a broker restart)
  status          exit 0 if the broker runs and answers (prints the same lines as start)
  log             print the path of the broker log

environment (defaults):
  ECST_KAFKA_PORT=19092             PLAINTEXT listener (also the inter-broker listener)
  ECST_KAFKA_SASL_PORT=19094        SASL_PLAINTEXT listener: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
  ECST_KAFKA_CONTROLLER_PORT=19093  KRaft controller listener
  ECST_KAFKA_SASL_USER=ecst         SASL user, for all three mechanisms
  ECST_KAFKA_SASL_PASSWORD=ecst-secret
  ECST_KAFKA_DIR=<new temp dir>     state dir (config, data, broker.log, pid); kept by stop
                                    when given, removed by stop when it is a temp dir
  ECST_KAFKA_CACHE=$HOME/.cache/ecst/kafka   jar cache: <cache>/<kafka version>/libs
  ECST_KAFKA_START_TIMEOUT=120      seconds to wait for the broker to answer
  ECST_KAFKA_STOP_TIMEOUT=30        seconds to wait after SIGTERM before SIGKILL
  ECST_KAFKA_HEAP_OPTS="-Xms512m -Xmx1g"
  JAVA_HOME                         java 17 or newer; otherwise java on PATH
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"
pom=$here/kafka/pom.xml
log4j_conf=$here/kafka/log4j2.properties

svc=kafka.sh
what=broker
pid_name=kafka.pid
log_name=broker.log
dir_var=ECST_KAFKA_DIR

pom_text=$(<"$pom")
[[ $pom_text =~ \<kafka.version\>([^<]+)\</kafka.version\> ]] || die "no <kafka.version> in $pom"
kafka_version=${BASH_REMATCH[1]}
product="Kafka $kafka_version"

cache_root=${ECST_KAFKA_CACHE:-${HOME:?HOME is not set}/.cache/ecst/kafka}
vdir=$cache_root/$kafka_version
libs=$vdir/libs

port=${ECST_KAFKA_PORT:-19092}
cport=${ECST_KAFKA_CONTROLLER_PORT:-19093}
sport=${ECST_KAFKA_SASL_PORT:-19094}
sasl_user=${ECST_KAFKA_SASL_USER:-ecst}
sasl_password=${ECST_KAFKA_SASL_PASSWORD:-ecst-secret}
start_timeout=${ECST_KAFKA_START_TIMEOUT:-120}
stop_timeout=${ECST_KAFKA_STOP_TIMEOUT:-30}
heap_opts=${ECST_KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}

# Without ECST_KAFKA_DIR the state dir is a fresh temp dir; this file, named after the
# PLAINTEXT port, tells the later stop/status/restart-broker calls where it is.
pointer=${TMPDIR:-/tmp}/ecst-kafka-$port.dir

check_settings() {
	local p
	for p in "$port" "$cport" "$sport"; do
		if ! [[ $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then
			die "bad port: $p"
		fi
	done
	[[ $port != "$cport" && $port != "$sport" && $cport != "$sport" ]] ||
		die "ECST_KAFKA_PORT, ECST_KAFKA_CONTROLLER_PORT and ECST_KAFKA_SASL_PORT must differ"
	# They go unquoted into --add-scram [name=...,password=...] and a JAAS line.
	[[ $sasl_user =~ ^[A-Za-z0-9._-]+$ ]] || die "ECST_KAFKA_SASL_USER must match [A-Za-z0-9._-]+"
	[[ $sasl_password =~ ^[A-Za-z0-9._-]+$ ]] || die "ECST_KAFKA_SASL_PASSWORD must match [A-Za-z0-9._-]+"
}

# ---------------------------------------------------------------------------------------------
# fetch

fetch() {
	local want
	want=$(sha256sum "$pom")
	mvn_fetch "${want%% *}" "Kafka $kafka_version" "kafka_2.13-$kafka_version.jar"
}

# ---------------------------------------------------------------------------------------------
# the hooks of scripts/lib.sh, and protocol checks

# owns CMDLINE STATE: a kafka.Kafka started on STATE's server.properties.
owns() { [[ $1 == *kafka.Kafka\ "$2/server.properties"* ]]; }

# started STATE: the broker's log says it is up.
started() { [[ $(<"$1/$log_name") == *"Kafka Server started"* ]]; }

# answering: both client listeners speak Kafka.
answering() { answers "$port" && answers "$sport"; }

# adopt STATE: a started broker keeps the ports it was started with (restart-broker, status),
# whatever the environment of the later call says.
adopt() {
	[[ -f $1/ports ]] || return 0
	read -r port cport sport <"$1/ports"
}

print_env() {
	printf 'ECST_TEST_BROKERS=%s:%s\n' "$host" "$port"
	printf 'ECST_TEST_SASL_BROKERS=%s:%s\n' "$host" "$sport"
}

# answers PORT: the listener speaks Kafka. It sends ApiVersions v0 (api key 18, correlation id
# 1, null client id) and wants correlation id 1 and error code 0 back. A SASL listener answers
# ApiVersions before the SASL handshake, so this works on both listeners.
answers() {
	local got
	# shellcheck disable=SC2016 # $0 and $1 are the inner shell's arguments
	got=$(timeout 5 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\xff\xff" >&3
		head -c 10 <&3 | od -An -v -tx1 | tr -d " \n"
	' "$host" "$1" 2>/dev/null) || return 1
	[[ ${#got} == 20 && ${got:8:12} == 000000010000 ]]
}

# ---------------------------------------------------------------------------------------------
# config and storage

write_config() {
	local state=$1
	mkdir -p "$state/data"
	cp "$log4j_conf" "$state/log4j2.properties"
	printf '%s %s %s\n' "$port" "$cport" "$sport" >"$state/ports"
	cat >"$state/server.properties" <<EOF
# Written by scripts/kafka.sh: a single-node KRaft test broker (Kafka $kafka_version).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:$cport
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$host:$port,SASL_PLAINTEXT://$host:$sport,CONTROLLER://$host:$cport
advertised.listeners=PLAINTEXT://$host:$port,SASL_PLAINTEXT://$host:$sport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$state/data

# SASL on its own listener. SCRAM users live in the cluster metadata (StorageTool format
# --add-scram); PLAIN users are the user_<name> entries of the listener's JAAS config.
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user="$sasl_password";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;

# One node: every internal topic with replication factor 1 and min ISR 1. The default
# transaction.state.log.min.isr=2 makes every transaction fail on one node.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=1

# Tests create their topics; a typo must not create one.
auto.create.topics.enable=false
# The first consumer group must not wait 3 s for more members.
group.initial.rebalance.delay.ms=0

# Compaction tests: the cleaner looks often and cleans almost any dirty log. (The active
# segment is never cleaned: give test topics a small segment.ms and append after the wait.)
log.cleaner.backoff.ms=200
log.cleaner.min.cleanable.ratio=0.01
log.cleaner.dedupe.buffer.size=33554432

# A 2-core machine.
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
EOF
}

# new_cluster_id: 16 random bytes in URL-safe base64 without padding (the form of
# StorageTool random-uuid), not starting with '-' (Kafka's Uuid.randomUuid avoids that too).
new_cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_')
		id=${id:0:22}
		[[ $id != -* ]] && break
	done
	printf '%s\n' "$id"
}

format_storage() {
	local state=$1 cid
	if [[ -f $state/data/meta.properties ]]; then
		log "storage in $state/data is already formatted; keeping its data"
		return 0
	fi
	cid=$(new_cluster_id)
	log "formatting storage (cluster id $cid, SCRAM user $sasl_user)"
	if ! "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
		-Dlog4j2.configurationFile="$state/log4j2.properties" \
		-cp "$libs/*" kafka.tools.StorageTool format \
		-t "$cid" -c "$state/server.properties" \
		--add-scram "SCRAM-SHA-256=[name=$sasl_user,password=$sasl_password]" \
		--add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$sasl_password]" \
		>"$state/format.log" 2>&1; then
		cat "$state/format.log" >&2
		die "kafka.tools.StorageTool format failed"
	fi
}

# ---------------------------------------------------------------------------------------------
# broker process

launch_broker() {
	local state=$1
	local -a heap
	read -r -a heap <<<"$heap_opts"
	launch "$state" "$java" "${heap[@]}" \
		-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
		-XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 -XX:+ExitOnOutOfMemoryError \
		-XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$state/log4j2.properties" -Dkafka.logs.dir="$state" \
		-cp "$libs/*" kafka.Kafka "$state/server.properties"
}

# ---------------------------------------------------------------------------------------------
# commands

cmd_start() {
	local state p
	check_settings
	check_java
	fetch
	state=$(current_state)
	already_running "$state" && return 0
	for p in "$port" "$cport" "$sport"; do
		! port_open "$p" || die "port $p on $host is already in use"
	done
	state=$(new_state "$state")
	write_config "$state"
	format_storage "$state"
	log "starting Kafka $kafka_version (PLAINTEXT $host:$port, SASL_PLAINTEXT $host:$sport, controller $host:$cport)"
	launch_broker "$state"
	wait_ready "$state"
	print_env
}

cmd_restart_broker() {
	local state
	check_java
	state=$(current_state)
	[[ -n $state && -f $state/server.properties && -f $state/data/meta.properties ]] ||
		die "no broker state to restart (run start first)"
	adopt "$state"
	stop_process "$state"
	log "starting the broker again on $state"
	launch_broker "$state"
	wait_ready "$state"
	print_env
}

main "$@"
