#!/usr/bin/env bash
# scripts/setup.sh postgres|kafka|registry|interop|compose|prometheus|chromium: installs what the tests and the demo need, when it is
# missing. Idempotent and quick when everything is there. Uses Debian's apt as root (or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else log "need root to run: $*"; exit 1
  fi
}

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have_pg() {
  [ -n "${ECST_PG_BINDIR:-}" ] && [ -x "$ECST_PG_BINDIR/initdb" ] && return 0
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && return 0
  done
  command -v initdb >/dev/null && command -v postgres >/dev/null
}

postgres() {
  if have_pg; then return 0; fi
  log "installing PostgreSQL 15 server binaries (apt-get install postgresql-15)"
  # The tests start clusters of their own: Debian's default cluster is not wanted.
  as_root mkdir -p /etc/postgresql-common
  if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' | as_root tee -a /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  apt_install postgresql-15
  have_pg || { log "postgresql-15 installed but initdb not found"; exit 1; }
  log "PostgreSQL installed"
}

java_maven() {
  local need=()
  command -v java >/dev/null || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || need+=(maven)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_install "${need[@]}"
  fi
}

kafka() {
  java_maven
  scripts/kafka.sh fetch
}

registry() {
  java_maven
  scripts/registry.sh fetch
}

# The interop tests (internal/interop) read our topics with tools that share no code with ecst:
# kcat, and confluent-kafka-python in a virtualenv the test builds itself (pinned in
# internal/interop/testdata/requirements.txt). Here: kcat, and a python3 that can make a venv
# (Debian splits ensurepip out into python3-venv). And bash-completion, which the script of
# `ecst completion bash` needs: internal/cli completes with it in a real bash.
have_venv() {
  command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' 2>/dev/null
}

interop() {
  local need=()
  command -v kcat >/dev/null || need+=(kcat)
  have_venv || need+=(python3 python3-venv)
  [ -f /usr/share/bash-completion/bash_completion ] || need+=(bash-completion)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_install "${need[@]}"
  fi
  command -v kcat >/dev/null || { log "kcat installed but not on PATH"; exit 1; }
  have_venv || { log "python3 -m venv still unusable after installing python3-venv"; exit 1; }
}

have_compose() {
  command -v docker-compose >/dev/null && return 0
  command -v docker >/dev/null && docker compose version >/dev/null 2>&1
}

# compose: a docker-compose that resolves docker-compose.yml (`config`) with no
# Docker daemon. Debian's package (1.29, Python) does; so does the v2 plugin.
compose() {
  if have_compose; then return 0; fi
  log "installing docker-compose (apt-get install docker-compose; no Docker daemon needed)"
  apt_install docker-compose
  have_compose || { log "docker-compose installed but not found on PATH"; exit 1; }
  log "docker-compose installed"
}

# prometheus: promtool, which checks and unit-tests deploy/prometheus/alerts.yml (make alerts-test).
# Debian ships it in the prometheus package, whose server is not wanted: where systemd runs,
# the service the package enables is stopped and disabled again.
prometheus() {
  if command -v promtool >/dev/null; then return 0; fi
  log "installing promtool (apt-get install prometheus; its server is not started)"
  apt_install prometheus
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  command -v promtool >/dev/null || { log "prometheus installed but promtool not found on PATH"; exit 1; }
  log "promtool installed"
}

# chromium: Debian's headless-capable Chromium, which the console's browser tests (internal/console,
# driven by chromedp) start with --headless. ECST_CHROMIUM names another binary.
have_chromium() {
  [ -n "${ECST_CHROMIUM:-}" ] && [ -x "$ECST_CHROMIUM" ] && return 0
  type -P chromium >/dev/null  # not command -v: that finds the function below
}

chromium() {
  if have_chromium; then return 0; fi
  log "installing chromium (apt-get install chromium) for the console's browser tests"
  apt_install chromium fonts-dejavu-core
  have_chromium || { log "chromium installed but not found on PATH"; exit 1; }
  log "chromium installed"
}

case "${1:-}" in
  postgres) postgres ;;
  kafka) kafka ;;
  registry) registry ;;
  interop) interop ;;
  compose) compose ;;
  prometheus) prometheus ;;
  chromium) chromium ;;
  *) echo "usage: scripts/setup.sh postgres|kafka|registry|interop|compose|prometheus|chromium" >&2; exit 2 ;;
esac
