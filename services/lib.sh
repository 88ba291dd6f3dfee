# Shared helpers for the service scripts (sourced, not executed).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=${TRACKPIPE_SERVICES_DIR:-$ROOT/.services}
CACHE_DIR=${TRACKPIPE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/trackpipe}

die() { echo "error: $*" >&2; exit 1; }
info() { echo "[services] $*"; }

port_open() { # port_open PORT -> 0 when something listens on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.3
  done
}

stop_pid() { # stop_pid PIDFILE NAME: SIGTERM, then SIGKILL after 20 s
  local pidfile=$1 name=$2
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; info "$name not running"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill -TERM "$pid"
  if ! wait_for 20 "$name to stop" bash -c "! kill -0 $pid 2>/dev/null"; then
    info "$name did not stop on SIGTERM, killing"; kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"; info "$name stopped"
}
