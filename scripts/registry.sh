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
# Pitfalls (and those of scripts/lib.sh, which manages the process):
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

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"

# Pinned: the newest apicurio-registry-app on Maven Central that runs on Java 17 (see above).
apicurio_version=3.0.9
coords=io.apicurio:apicurio-registry-app:$apicurio_version:tar.gz:all
runner_jar=apicurio-registry-app-$apicurio_version-runner.jar
api_path=/apis/ccompat/v7

svc=registry.sh
what=registry
product="Apicurio Registry $apicurio_version"
pid_name=registry.pid
log_name=registry.log
dir_var=ECST_REGISTRY_DIR

cache_root=${ECST_REGISTRY_CACHE:-${HOME:?HOME is not set}/.cache/ecst/registry}
vdir=$cache_root/$apicurio_version
app=$vdir/app

port=${ECST_REGISTRY_PORT:-18081}
start_timeout=${ECST_REGISTRY_START_TIMEOUT:-120}
stop_timeout=${ECST_REGISTRY_STOP_TIMEOUT:-30}
heap_opts=${ECST_REGISTRY_HEAP_OPTS:--Xms64m -Xmx384m}
canonical_hash=${ECST_REGISTRY_CANONICAL_HASH:-false}

# Without ECST_REGISTRY_DIR the state dir is a fresh temp dir; this file, named after the port,
# tells the later stop/status calls where it is.
pointer=${TMPDIR:-/tmp}/ecst-registry-$port.dir

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
# the hooks of scripts/lib.sh, and HTTP checks

# owns CMDLINE STATE: the registry JVM started on STATE.
owns() { [[ $1 == *"-Decst.registry.state=$2 "* && $1 == *"$runner_jar"* ]]; }

started() { :; }
adopt() { :; }
answering() { answers; }

print_env() {
	printf 'ECST_TEST_SCHEMA_REGISTRY_URL=http://%s:%s%s\n' "$host" "$port" "$api_path"
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

launch_registry() {
	local state=$1
	local -a heap
	read -r -a heap <<<"$heap_opts"
	mkdir -p "$state/tmp"
	# C1 only, serial GC and a JDBC pool of 2 (default 20): ready in ~2.5 s instead of ~4.5 s and
	# ~70 MB less RSS on a 2-core machine. java.io.tmpdir keeps vert.x's cache dir out of /tmp.
	launch "$state" "$java" "${heap[@]}" \
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
		-jar "$app/$runner_jar"
}

# ---------------------------------------------------------------------------------------------
# commands

cmd_start() {
	local state
	check_settings
	check_java
	fetch
	state=$(current_state)
	already_running "$state" && return 0
	! port_open "$port" || die "port $port on $host is already in use"
	state=$(new_state "$state")
	log "starting Apicurio Registry $apicurio_version on http://$host:$port$api_path (in-memory storage)"
	launch_registry "$state"
	wait_ready "$state"
	print_env
}

main "$@"
