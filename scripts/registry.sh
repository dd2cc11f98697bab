#!/usr/bin/env bash
# scripts/registry.sh: a real Confluent-compatible Schema Registry (Apicurio Registry 3.0.9, its
# "ccompat" API) on loopback, with in-memory storage, for the tests that compare our local Avro
# compatibility checker's verdicts with a real registry's. The app comes from Maven Central
# through mvn; no Docker. Needs bash, java 17+, mvn, tar and coreutils.
# `scripts/registry.sh help` lists the commands and settings.
#
#   set -a; eval "$(scripts/registry.sh start)"; set +a   # exports ECST_TEST_SCHEMA_REGISTRY_URL
#   go test ./...
#   scripts/registry.sh stop
#
# ECST_TEST_SCHEMA_REGISTRY_URL=http://127.0.0.1:18081/apis/ccompat/v7 behaves like the root of
# a Confluent registry: franz-go's sr client appends /subjects/..., /config/...,
# /compatibility/subjects/{s}/versions/{v} to it (url.JoinPath keeps the base path).
#
# Facts checked by running them (2026-11-24; OpenJDK 17.0.15, Maven 3.8.7, 2 cores, franz-go
# pkg/sr v1.8.0 as the client). They correct or confirm /work/shared/KAFKA.md:
# - Artifact: io.apicurio:apicurio-registry-app:3.0.9:tar.gz:all (109 MB download, 115 MB
#   unpacked: apicurio-registry-app-3.0.9-runner.jar plus lib/, 359 jars). Started with
#   `java -jar apicurio-registry-app-3.0.9-runner.jar` (NOT quarkus-run.jar: that is the 3.3.x
#   layout).
# - Versions on Central (apicurio-registry-app maven-metadata.xml): 2.0.1.Final ... 2.6.13.Final,
#   3.0.9, 3.3.2, 3.3.3. 3.3.3 (the <release>, 159 MB, quarkus-run.jar layout) does not run on
#   Java 17: "class file version 65.0" (needs Java 21; the 3.2+ sources set release 21), and
#   apt here has no openjdk-21 candidate. 3.0.9 is the newest app archive on Central that runs
#   on Java 17 (3.0.10+ and 3.1.x are not in the metadata; 3.0.15 and 3.1.7 are "not found").
#   Hence the pin below.
# - Its parent POM io.apicurio:apicurio-registry:3.0.9 is MISSING from Central, so everything
#   that reads the artifact's descriptor fails ("Failed to read artifact descriptor"):
#   dependency:copy -Dartifact, dependency-plugin 3.8.1 get, and copy-dependencies from a pom
#   (unlike scripts/kafka.sh, so there is no scripts/registry/pom.xml). dependency-plugin 2.8
#   get -Dtransitive=false -Ddest=DIR works; fetch uses it and untars the archive into the
#   cache. A first fetch took ~5 s here (plus 109 MB in ~/.m2); later fetches never run mvn.
# - Default storage is H2 in memory (jdbc:h2:mem:db_<uuid>), so each start begins empty and
#   stop loses everything. The ccompat API is at /apis/ccompat/v7 (v7 is the only ccompat
#   version in 3.0.9: v6 and v8 are 404). No other port is opened: health (/health/ready) is on the same port.
# - start: `registry.sh start` returns in ~3 s with a warm cache (GET <base>/subjects = 200
#   ~2.5 s after the JVM starts with the flags below: C1 only, serial GC, JDBC pool of 2;
#   ~4.5 s with JVM defaults). RSS ~165 MB right after start, ~187 MB after a few hundred
#   requests (with JVM defaults and -Xmx384m: 236 / 250 MB).
# - SIGTERM stops it in under 1.5 s.
#
# Behaviour of the ccompat API (3.0.9), checked with franz-go's sr client and raw HTTP. Where
# it differs from Confluent's registry, a test comparing verdicts must allow for it:
# - Compatibility levels: PUT /config/{s} accepts all 7 (NONE, BACKWARD[_TRANSITIVE],
#   FORWARD[_TRANSITIVE], FULL[_TRANSITIVE]) and GET reads them back. It is stored as the
#   artifact's COMPATIBILITY rule; no global rule or other setting is needed for checks to
#   happen. A level may be set before the subject exists (it sticks when the subject is
#   created), EXCEPT NONE: that deletes the rule, and on a subject that does not exist it is
#   404 error_code 40401.
# - DIFFERS: subject-level NONE is "no subject rule", so the subject falls back to the global
#   level. With a global BACKWARD, a subject set to NONE is still checked as BACKWARD.
# - DIFFERS: the global default is NONE (Confluent: BACKWARD). This script leaves it at NONE;
#   tests should set every subject's level explicitly. DELETE /config (global) is 405.
# - DIFFERS: GET /config/{s} without a subject level is 200 {"compatibilityLevel":"NONE"} for an
#   existing subject (not the global level, and not 404 40408) and 404 40401 for an unknown
#   subject; ?defaultToGlobal=true returns the global level (for an existing subject).
#   An unknown level ("BOGUS", also lower case "backward") is 500 error_code 0 (Confluent: 422).
# - POST /compatibility/subjects/{s}/versions/{latest|n} honours the subject's level and
#   checks against that one version only (transitive levels therefore behave like their
#   non-transitive form there, as in Confluent). Verdicts for single steps (add a field with or
#   without default, remove a field, int->long, int->string) matched Avro's rules at all 7
#   levels. An unknown subject with "latest" is 200 is_compatible=true; an unknown version is
#   404 40402; an invalid schema is 422 42201.
# - DIFFERS: POST /compatibility/subjects/{s}/versions (no version; franz-go version -2) checks
#   against EVERY version even for non-transitive levels (Confluent: latest only for
#   BACKWARD/FORWARD/FULL).
# - Registration honours transitive levels: with v1 {a int, x string default ""}, v2 {a},
#   v3 {a, x int default 0}, v3 registers under BACKWARD, FORWARD and FULL and is 409 under the
#   *_TRANSITIVE levels. Soft-deleted versions are left out of the checks.
# - Incompatible registration: HTTP 409, error_code 409, message
#   "io.apicurio.registry.rules.RuleViolationException: Incompatible artifact: ... list of diff
#   types: [...]" (Confluent's wording differs).
# - DIFFERS: ?verbose=true is accepted but gives no messages: {"is_compatible":false} only.
# - DIFFERS: lookup (POST /subjects/{s}) and the dedup of POST /subjects/{s}/versions compare the
#   raw text: a schema differing only in whitespace or JSON key order is 404 40403 on lookup and
#   becomes a NEW version (with a new id) on register. With ?normalize=true (or with
#   ECST_REGISTRY_CANONICAL_HASH=true, i.e. apicurio.ccompat.use-canonical-hash) they match, but
#   so does a schema differing only in "doc" (Apicurio's canonical form drops doc and aliases;
#   field order still counts).
# - Ids are content ids: the same schema under another subject gets the same id, registering
#   an already registered schema returns its id without a new version. Ids are not dense
#   (jumps of several between registrations were seen).
# - Errors: unknown subject 404 40401, unknown version 404 40402, unknown schema id 404 40403,
#   invalid Avro on register 422 42201 ("Failed to discover artifact type from content."),
#   hard delete before soft delete 409 40405. GET /mode is 404 (no mode API).
#   GET /schemas/ids/{id}/subjects is 404; /schemas/ids/{id}/versions works (franz-go's
#   CreateSchema uses the latter). GET responses carry "schemaType":"AVRO" explicitly.
#
# Pitfalls:
# - The registry is started with nohup and its output goes to registry.log (with an access log
#   and an audit log line per request), so $(registry.sh start) does not hang on a pipe.
# - The pid file is checked against /proc/<pid>/cmdline (-Decst.registry.state=<state dir>), so
#   a recycled pid is never signalled. A zombie counts as stopped.
# - Without ECST_REGISTRY_DIR, the temp state dir is found again through
#   ${TMPDIR:-/tmp}/ecst-registry-<ECST_REGISTRY_PORT>.dir. Run stop/status with the same
#   ECST_REGISTRY_PORT and TMPDIR as start.
set -euo pipefail

usage() {
	cat >&2 <<'EOF'
usage: scripts/registry.sh <command>

  fetch    resolve the Apicurio Registry app with mvn into the cache (once; later calls are instant)
  start    fetch if needed, start the registry (in-memory storage), wait until the ccompat API
           answers; prints ECST_TEST_SCHEMA_REGISTRY_URL=... on stdout
  stop     stop the registry (SIGTERM, then SIGKILL after 30 s); removes a temp state dir
  status   exit 0 if the registry runs and answers (prints the same line as start)
  log      print the path of the registry log

environment (defaults):
  ECST_REGISTRY_PORT=18081             HTTP port on 127.0.0.1
  ECST_REGISTRY_DIR=<new temp dir>     state dir (registry.log, pid, tmp); kept by stop when
                                       given, removed by stop when it is a temp dir
  ECST_REGISTRY_CACHE=$HOME/.cache/ecst/registry   app cache: <cache>/<version>/app
  ECST_REGISTRY_START_TIMEOUT=120      seconds to wait for the API to answer
  ECST_REGISTRY_STOP_TIMEOUT=30        seconds to wait after SIGTERM before SIGKILL
  ECST_REGISTRY_HEAP_OPTS="-Xms64m -Xmx384m"
  ECST_REGISTRY_CANONICAL_HASH=false   true: lookups and register dedup compare Apicurio's
                                       canonical form (as ?normalize=true does per request)
  JAVA_HOME                            java 17 or newer; otherwise java on PATH
EOF
}

# Pinned: the newest apicurio-registry-app on Maven Central that runs on Java 17 (see above).
apicurio_version=3.0.9
coords=io.apicurio:apicurio-registry-app:$apicurio_version:tar.gz:all
runner_jar=apicurio-registry-app-$apicurio_version-runner.jar
api_path=/apis/ccompat/v7

cache_root=${ECST_REGISTRY_CACHE:-${HOME:?HOME is not set}/.cache/ecst/registry}
vdir=$cache_root/$apicurio_version
app=$vdir/app

host=127.0.0.1
port=${ECST_REGISTRY_PORT:-18081}
start_timeout=${ECST_REGISTRY_START_TIMEOUT:-120}
stop_timeout=${ECST_REGISTRY_STOP_TIMEOUT:-30}
heap_opts=${ECST_REGISTRY_HEAP_OPTS:--Xms64m -Xmx384m}
canonical_hash=${ECST_REGISTRY_CANONICAL_HASH:-false}
java=${JAVA_HOME:+$JAVA_HOME/bin/}java

# Without ECST_REGISTRY_DIR the state dir is a fresh temp dir; this file, named after the port,
# tells the later stop/status calls where it is.
pointer=${TMPDIR:-/tmp}/ecst-registry-$port.dir

log() { printf 'registry.sh: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

check_settings() {
	local v
	if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
		die "bad port: $port"
	fi
	for v in "$start_timeout" "$stop_timeout"; do
		[[ $v =~ ^[0-9]+$ ]] || die "bad timeout: $v"
	done
	[[ $canonical_hash == true || $canonical_hash == false ]] ||
		die "ECST_REGISTRY_CANONICAL_HASH must be true or false"
}

check_java() {
	local out major
	out=$("$java" -version 2>&1) || die "cannot run $java (set JAVA_HOME or put java 17+ on PATH)"
	[[ $out =~ version\ \"([0-9]+)(\.([0-9]+))? ]] || die "cannot read the java version from: $out"
	major=${BASH_REMATCH[1]}
	[[ $major == 1 ]] && major=${BASH_REMATCH[3]}
	((major >= 17)) || die "Apicurio Registry $apicurio_version needs java 17 or newer, $java is $major"
}

# ---------------------------------------------------------------------------------------------
# fetch

fetch() {
	local tmp tarball
	if [[ -f $app/$runner_jar && -f $vdir/fetched && $(<"$vdir/fetched") == "$coords" ]]; then
		return 0
	fi
	command -v mvn >/dev/null || die "mvn not found on PATH"
	command -v tar >/dev/null || die "tar not found on PATH"
	mkdir -p "$vdir"
	tmp=$(mktemp -d "$vdir/app.tmp.XXXXXX")
	log "resolving $coords from Maven Central into $app (once)"
	# dependency-plugin 2.8's get, on purpose: the parent POM io.apicurio:apicurio-registry:3.0.9
	# is missing from Central, and every resolver that reads the artifact's descriptor fails on it
	# (dependency:copy, 3.x get, copy-dependencies from a pom). 2.8 with -Dtransitive=false does
	# not, and its (deprecated) dest copies the archive out of the local repository for us.
	if ! mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:2.8:get \
		-Dartifact="$coords" -Dtransitive=false -Ddest="$tmp/" >"$vdir/mvn.log" 2>&1; then
		cat "$vdir/mvn.log" >&2
		rm -rf "$tmp"
		die "mvn could not resolve $coords (is Maven Central reachable? log: $vdir/mvn.log)"
	fi
	tarball=$tmp/apicurio-registry-app-$apicurio_version-all.tar.gz
	[[ -f $tarball ]] || {
		rm -rf "$tmp"
		die "mvn ran but $tarball is missing"
	}
	mkdir "$tmp/app"
	if ! tar -xzf "$tarball" -C "$tmp/app"; then
		rm -rf "$tmp"
		die "cannot unpack $tarball"
	fi
	[[ -f $tmp/app/$runner_jar ]] || {
		rm -rf "$tmp"
		die "unpacked $tarball but $runner_jar is missing"
	}
	rm -rf "$app"
	mv "$tmp/app" "$app"
	rm -rf "$tmp"
	printf '%s\n' "$coords" >"$vdir/fetched"
	log "fetched Apicurio Registry $apicurio_version ($(du -sh "$app" | cut -f1)) into $app"
}

# ---------------------------------------------------------------------------------------------
# process and HTTP checks

# running_pid PID: PID is a live process, not a zombie.
running_pid() {
	local pid=$1 st
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	read -r _ _ st _ <"/proc/$pid/stat" 2>/dev/null || return 1
	[[ $st != Z ]]
}

# alive PID STATE: PID is a live registry JVM started on STATE. The cmdline check keeps a
# recycled pid from being taken for (and killed as) the registry.
alive() {
	local pid=$1 state=$2 cmd
	running_pid "$pid" || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *"-Decst.registry.state=$state "* && $cmd == *"$runner_jar"* ]]
}

# port_open: something accepts TCP connections on host:port.
port_open() {
	# shellcheck disable=SC2016 # $0 and $1 are the inner shell's arguments
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# answers: GET <api>/subjects answers 200 (plain HTTP over bash's /dev/tcp; no curl needed).
answers() {
	local status
	# shellcheck disable=SC2016 # $0, $1 and $2 are the inner shell's arguments
	status=$(timeout 5 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "GET %s/subjects HTTP/1.1\r\nHost: %s:%s\r\nAccept: application/vnd.schemaregistry.v1+json\r\nConnection: close\r\n\r\n" "$2" "$0" "$1" >&3
		head -n 1 <&3
	' "$host" "$port" "$api_path" 2>/dev/null) || return 1
	[[ $status == "HTTP/1."[01]" 200"* ]]
}

show_log_tail() {
	local f=$1/registry.log
	[[ -f $f ]] || return 0
	{
		echo "----- last 60 lines of $f -----"
		tail -n 60 "$f"
		echo "-----"
	} >&2
}

# current_state: the state dir of this registry, or nothing.
current_state() {
	if [[ -n ${ECST_REGISTRY_DIR:-} ]]; then
		[[ -d $ECST_REGISTRY_DIR ]] && (cd "$ECST_REGISTRY_DIR" && pwd)
		return 0
	fi
	local d
	[[ -f $pointer ]] || return 0
	d=$(<"$pointer")
	[[ -d $d ]] && printf '%s\n' "$d"
	return 0
}

launch() {
	local state=$1
	local -a heap
	read -r -a heap <<<"$heap_opts"
	[[ -f $state/registry.log ]] && mv -f "$state/registry.log" "$state/registry.log.1"
	: >"$state/registry.log"
	mkdir -p "$state/tmp"
	# C1 only, serial GC and a JDBC pool of 2 (default 20): ready in ~2.5 s instead of ~4.5 s and
	# ~70 MB less RSS on a 2-core machine. java.io.tmpdir keeps vert.x's cache dir out of /tmp.
	(
		cd "$state"
		exec nohup "$java" "${heap[@]}" \
			-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=64m \
			-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
			-Djava.io.tmpdir="$state/tmp" \
			-Decst.registry.state="$state" \
			-Dquarkus.http.host="$host" -Dquarkus.http.port="$port" \
			-Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2 \
			-Dapicurio.datasource.jdbc.initial-size=2 -Dapicurio.datasource.jdbc.min-size=2 \
			-Dapicurio.datasource.jdbc.max-size=20 \
			-Dapicurio.ccompat.use-canonical-hash="$canonical_hash" \
			-Dapicurio.storage.snapshot.location="$state/tmp" \
			-Dapicurio.import.work-dir="$state/tmp" \
			-jar "$app/$runner_jar" \
			>>"$state/registry.log" 2>&1 </dev/null
	) &
	printf '%s\n' "$!" >"$state/registry.pid"
}

# wait_ready STATE: until GET <api>/subjects is 200; fails (and stops the registry) if it exits
# or does not get there in time.
wait_ready() {
	local state=$1 pid t0=$SECONDS
	pid=$(<"$state/registry.pid")
	while :; do
		# Not alive(): right after the fork the child's cmdline is still bash, not java. The
		# pid is this shell's own child, so it cannot have been recycled.
		if ! running_pid "$pid"; then
			show_log_tail "$state"
			rm -f "$state/registry.pid"
			die "the registry exited during startup (log: $state/registry.log)"
		fi
		if answers; then
			log "registry ready after $((SECONDS - t0)) s (pid $pid, Apicurio Registry $apicurio_version, state $state)"
			return 0
		fi
		if ((SECONDS - t0 >= start_timeout)); then
			show_log_tail "$state"
			stop_registry "$state"
			die "the registry did not answer within $start_timeout s (log: $state/registry.log)"
		fi
		sleep 0.5
	done
}

# stop_registry STATE: SIGTERM, SIGKILL after stop_timeout. Keeps the state dir.
stop_registry() {
	local state=$1 pid t0=$SECONDS
	[[ -f $state/registry.pid ]] || return 0
	pid=$(<"$state/registry.pid")
	if alive "$pid" "$state"; then
		log "stopping registry pid $pid"
		kill -TERM "$pid" 2>/dev/null || true
		while alive "$pid" "$state" && ((SECONDS - t0 < stop_timeout)); do
			sleep 0.2
		done
		if alive "$pid" "$state"; then
			log "registry pid $pid still up after $stop_timeout s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			while alive "$pid" "$state" && ((SECONDS - t0 < stop_timeout + 10)); do
				sleep 0.2
			done
			! alive "$pid" "$state" || die "registry pid $pid survived SIGKILL"
		else
			log "registry stopped after $((SECONDS - t0)) s"
		fi
	fi
	rm -f "$state/registry.pid"
}

print_env() {
	printf 'ECST_TEST_SCHEMA_REGISTRY_URL=http://%s:%s%s\n' "$host" "$port" "$api_path"
}

running() {
	local state=$1
	[[ -n $state && -f $state/registry.pid ]] && alive "$(<"$state/registry.pid")" "$state"
}

# ---------------------------------------------------------------------------------------------
# commands

cmd_start() {
	local state
	check_settings
	check_java
	fetch
	state=$(current_state)
	if running "$state"; then
		answers || die "a registry runs on $state but does not answer; run stop first"
		log "already running (state $state)"
		print_env
		return 0
	fi
	! port_open || die "port $port on $host is already in use"
	if [[ -n ${ECST_REGISTRY_DIR:-} ]]; then
		mkdir -p "$ECST_REGISTRY_DIR"
		state=$(cd "$ECST_REGISTRY_DIR" && pwd)
	else
		# A temp dir left by a registry that is gone (killed, crashed) is garbage.
		[[ -n $state && -f $state/.ecst-temp ]] && rm -rf "$state"
		state=$(mktemp -d "${TMPDIR:-/tmp}/ecst-registry.XXXXXX")
		: >"$state/.ecst-temp"
	fi
	printf '%s\n' "$state" >"$pointer"
	log "starting Apicurio Registry $apicurio_version on http://$host:$port$api_path (in-memory storage)"
	launch "$state"
	wait_ready "$state"
	print_env
}

cmd_stop() {
	local state
	state=$(current_state)
	if [[ -z $state ]]; then
		log "not running (no state dir)"
		rm -f "$pointer"
		return 0
	fi
	stop_registry "$state"
	if [[ -f $state/.ecst-temp ]]; then
		rm -rf "$state"
		log "removed $state"
	fi
	if [[ -f $pointer && $(<"$pointer") == "$state" ]]; then
		rm -f "$pointer"
	fi
}

cmd_status() {
	local state
	state=$(current_state)
	if ! running "$state"; then
		log "not running"
		return 1
	fi
	if ! answers; then
		log "running (pid $(<"$state/registry.pid")) but not answering on $host:$port"
		return 1
	fi
	log "running and answering (pid $(<"$state/registry.pid"), state $state)"
	print_env
}

cmd_log() {
	local state
	state=$(current_state)
	[[ -n $state ]] || die "no state dir"
	printf '%s\n' "$state/registry.log"
}

case ${1:-} in
fetch) check_java && fetch ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
log) cmd_log ;;
-h | --help | help) usage ;;
*)
	usage
	exit 2
	;;
esac
