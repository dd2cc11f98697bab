# scripts/lib.sh: process management shared by scripts/kafka.sh and scripts/registry.sh (sourced,
# not run): a JVM started in the background on a state dir, found again through a pointer file,
# checked by pid and command line, waited on until it answers, and stopped with SIGTERM, then
# SIGKILL. Also run_with, the body of scripts/test-kafka.sh and scripts/test-registry.sh, and
# mvn_fetch, which bench/debezium/run.sh uses too.
#
# The sourcing script sets, before it calls anything here:
#   svc           its name in log lines (kafka.sh)
#   what          the process, in messages (broker)
#   product       what it runs, for java's version check (Kafka 4.4.0)
#   dir_var       the variable naming a state dir of the caller's choosing (ECST_KAFKA_DIR)
#   pointer       the file that holds the temp state dir's path when dir_var is unset
#   pid_name      the pid file, in the state dir (kafka.pid)
#   log_name      the process's output, in the state dir (broker.log)
#   start_timeout, stop_timeout   seconds
# and defines:
#   owns CMDLINE STATE   CMDLINE (space-separated) is its process on STATE
#   answering            its listeners answer a request
#   started STATE        its log says it is up (or just true)
#   adopt STATE          take the settings a started process keeps (its ports), or nothing
#   print_env            the lines start prints on stdout
#
# Pitfalls, for both scripts:
# - The process is started with nohup and its output goes to the log file, so that a caller
#   reading our stdout through a pipe ($(...), exec.Cmd.Output) gets EOF when the script exits.
# - The pid file is checked against /proc/<pid>/cmdline (owns), so a recycled pid is never
#   signalled. A zombie counts as stopped.
# - Without the state dir variable, the temp state dir is found again through the pointer file,
#   named after the port: run stop/status with the same port and TMPDIR as start.

# Both listen on loopback, and run java 17 or newer: JAVA_HOME's, or the one on PATH.
host=127.0.0.1
java=${JAVA_HOME:+$JAVA_HOME/bin/}java

log() { printf '%s: %s\n' "$svc" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

check_java() {
	local out major
	out=$("$java" -version 2>&1) || die "cannot run $java (set JAVA_HOME or put java 17+ on PATH)"
	[[ $out =~ version\ \"([0-9]+)(\.([0-9]+))? ]] || die "cannot read the java version from: $out"
	major=${BASH_REMATCH[1]}
	[[ $major == 1 ]] && major=${BASH_REMATCH[3]}
	((major >= 17)) || die "$product needs java 17 or newer, $java is $major"
}

# running_pid PID: PID is a live process, not a zombie (a process whose parent is gone may stay
# a zombie where PID 1 does not reap, e.g. in a container).
running_pid() {
	local pid=$1 st
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	read -r _ _ st _ <"/proc/$pid/stat" 2>/dev/null || return 1
	[[ $st != Z ]]
}

# alive PID STATE: PID is a live process of ours started on STATE. The command line check keeps
# a recycled pid from being taken for (and killed as) ours.
alive() {
	local pid=$1 state=$2 cmd
	running_pid "$pid" || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	owns "$cmd" "$state"
}

# running STATE: our process runs on STATE.
running() {
	local state=$1
	[[ -n $state && -f $state/$pid_name ]] && alive "$(<"$state/$pid_name")" "$state"
}

# port_open PORT: something accepts TCP connections on host:PORT.
port_open() {
	# shellcheck disable=SC2016 # $0 and $1 are the inner shell's arguments
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$1" 2>/dev/null
}

show_log_tail() {
	local f=$1/$log_name
	[[ -f $f ]] || return 0
	{
		echo "----- last 60 lines of $f -----"
		tail -n 60 "$f"
		echo "-----"
	} >&2
}

# current_state: the state dir, or nothing.
current_state() {
	local d=${!dir_var:-}
	if [[ -n $d ]]; then
		[[ -d $d ]] && (cd "$d" && pwd)
		return 0
	fi
	[[ -f $pointer ]] || return 0
	d=$(<"$pointer")
	[[ -d $d ]] && printf '%s\n' "$d"
	return 0
}

# new_state OLD: a state dir for a new process (the caller's, or a new temp dir; OLD, a temp dir
# left by a process that is gone, is garbage), recorded in the pointer file.
new_state() {
	local old=$1 state d=${!dir_var:-}
	if [[ -n $d ]]; then
		mkdir -p "$d"
		state=$(cd "$d" && pwd)
	else
		[[ -n $old && -f $old/.ecst-temp ]] && rm -rf "$old"
		state=$(mktemp -d "${TMPDIR:-/tmp}/ecst-${svc%.sh}.XXXXXX")
		: >"$state/.ecst-temp"
	fi
	printf '%s\n' "$state" >"$pointer"
	printf '%s\n' "$state"
}

# launch STATE CMD...: starts CMD in the background in STATE, its output in the log file
# (the previous one kept as .1), and records its pid.
launch() {
	local state=$1
	shift
	[[ -f $state/$log_name ]] && mv -f "$state/$log_name" "$state/$log_name.1"
	# Created here, not by the background child's redirection, so wait_ready can read it at once.
	: >"$state/$log_name"
	# nohup and </dev/null: the process outlives this script and its terminal.
	(
		cd "$state"
		exec nohup "$@" >>"$state/$log_name" 2>&1 </dev/null
	) &
	printf '%s\n' "$!" >"$state/$pid_name"
}

# wait_ready STATE: until it has started and answers; fails (and stops it) if it exits or does
# not get there in time.
wait_ready() {
	local state=$1 pid t0=$SECONDS
	pid=$(<"$state/$pid_name")
	while :; do
		# Not alive(): right after the fork the child's cmdline is still bash, not java. The
		# pid is this shell's own child, so it cannot have been recycled.
		if ! running_pid "$pid"; then
			show_log_tail "$state"
			rm -f "$state/$pid_name"
			die "the $what exited during startup (log: $state/$log_name)"
		fi
		if started "$state" && answering; then
			log "$what ready after $((SECONDS - t0)) s (pid $pid, $product, state $state)"
			return 0
		fi
		if ((SECONDS - t0 >= start_timeout)); then
			show_log_tail "$state"
			stop_process "$state"
			die "the $what did not answer within $start_timeout s (log: $state/$log_name)"
		fi
		sleep 0.5
	done
}

# stop_process STATE: SIGTERM (a clean shutdown), SIGKILL after stop_timeout. Keeps the state
# dir.
stop_process() {
	local state=$1 pid t0=$SECONDS
	[[ -f $state/$pid_name ]] || return 0
	pid=$(<"$state/$pid_name")
	if alive "$pid" "$state"; then
		log "stopping $what pid $pid"
		kill -TERM "$pid" 2>/dev/null || true
		while alive "$pid" "$state" && ((SECONDS - t0 < stop_timeout)); do
			sleep 0.2
		done
		if alive "$pid" "$state"; then
			log "$what pid $pid still up after $stop_timeout s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			while alive "$pid" "$state" && ((SECONDS - t0 < stop_timeout + 10)); do
				sleep 0.2
			done
			! alive "$pid" "$state" || die "$what pid $pid survived SIGKILL"
		else
			log "$what stopped after $((SECONDS - t0)) s"
		fi
	fi
	rm -f "$state/$pid_name"
}

# already_running STATE: when our process runs on STATE and answers, says so and prints its
# environment (start is then done); fails when it runs but does not answer.
already_running() {
	local state=$1
	running "$state" || return 1
	adopt "$state"
	answering || die "a $what runs on $state but does not answer; run stop first"
	log "already running (state $state)"
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
	stop_process "$state"
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
	adopt "$state"
	if ! answering; then
		log "running (pid $(<"$state/$pid_name")) but not answering"
		return 1
	fi
	log "running and answering (pid $(<"$state/$pid_name"), state $state)"
	print_env
}

cmd_log() {
	local state
	state=$(current_state)
	[[ -n $state ]] || die "no state dir"
	printf '%s\n' "$state/$log_name"
}

# main CMD: runs the command CMD: fetch, start, stop, status, log, help, or one the script
# adds as a function cmd_<CMD> (restart-broker: cmd_restart_broker).
main() {
	local c=${1:-}
	case $c in
	fetch) check_java && fetch ;;
	stop) cmd_stop ;;
	status) cmd_status ;;
	log) cmd_log ;;
	-h | --help | help) usage ;;
	*)
		if [[ -n $c ]] && declare -F "cmd_${c//-/_}" >/dev/null; then
			"cmd_${c//-/_}"
		else
			usage
			exit 2
		fi
		;;
	esac
}

# run_with SCRIPT DIR_VAR CMD...: the body of scripts/test-<service>.sh. Starts the service with
# SCRIPT (in a temp state dir unless DIR_VAR names one), runs CMD with the variables start
# printed exported, and stops the service whatever happens.
run_with() {
	local script=$1 var=$2 env_lines
	shift 2
	cd "$(dirname "${BASH_SOURCE[0]}")/.."
	if [[ -z ${!var:-} ]]; then
		export "$var=$(mktemp -d "${TMPDIR:-/tmp}/ecst-$(basename "$script" .sh)-test.XXXXXX")"
	fi
	# shellcheck disable=SC2064 # expanded now, on purpose: the trap outlives the locals
	trap "$script stop || true; rm -rf '${!var}'" EXIT
	env_lines=$("$script" start)
	set -a
	eval "$env_lines"
	set +a
	log "${env_lines//$'\n'/ }"
	"$@"
}

# mvn_fetch STAMP DESC JAR...: the runtime jars of the pom $pom, copied by mvn into $libs once.
# $vdir/fetched holds the STAMP of the last fetch (the pom's sha256), so a changed pom fetches
# again and an unchanged one never runs mvn. DESC names the jars in messages; each JAR, a glob,
# must match one of those fetched.
mvn_fetch() {
	local stamp=$1 desc=$2 tmp jar
	local -a jars
	shift 2
	if [[ -d $libs && -f $vdir/fetched && $(<"$vdir/fetched") == "$stamp" ]]; then
		return 0
	fi
	command -v mvn >/dev/null || die "mvn not found on PATH (make setup-kafka installs it)"
	mkdir -p "$vdir"
	tmp=$(mktemp -d "$vdir/libs.tmp.XXXXXX")
	log "resolving $desc jars from Maven Central into $libs (once)"
	# -q leaves only errors (and, from Debian's mvn, stray colour escapes): keep them in a log
	# and show it when mvn fails.
	if ! mvn -B -q -f "$pom" \
		org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" >"$vdir/mvn.log" 2>&1; then
		cat "$vdir/mvn.log" >&2
		rm -rf "$tmp"
		die "mvn could not resolve the $desc jars (is Maven Central reachable? log: $vdir/mvn.log)"
	fi
	for jar; do
		compgen -G "$tmp/$jar" >/dev/null || {
			rm -rf "$tmp"
			die "mvn ran but $jar is missing"
		}
	done
	rm -rf "$libs"
	mv "$tmp" "$libs"
	printf '%s\n' "$stamp" >"$vdir/fetched"
	jars=("$libs"/*.jar)
	log "fetched ${#jars[@]} jars ($(du -sh "$libs" | cut -f1)) into $libs"
}
