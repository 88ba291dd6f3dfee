#!/usr/bin/env bash
# ClickHouse server from Debian's clickhouse-server package, with trackpipe's own config,
# data dir and ports (never the system default): `clickhouse.sh install|start|stop|status`.
source "$(dirname "$0")/lib.sh"
TCP_PORT=${TRACKPIPE_CLICKHOUSE_PORT:-9000}
HTTP_PORT=${TRACKPIPE_CLICKHOUSE_HTTP_PORT:-8123}
DIR=$RUN_DIR/clickhouse-$TCP_PORT
PIDFILE=$DIR/clickhouse.pid

find_server() {
  command -v clickhouse-server 2>/dev/null || { [ -x /usr/bin/clickhouse ] && echo "/usr/bin/clickhouse server"; } || true
}

install() {
  [ -n "$(find_server)" ] && return 0
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  info "installing Debian's clickhouse-server package"
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed"
  # The package would start a system-wide server on the default ports; a policy-rc.d that
  # refuses service starts (as in container images) keeps it from doing so.
  local policy=/usr/sbin/policy-rc.d placed=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && placed=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null || rc=$?
  [ -n "$placed" ] && $sudo rm -f "$policy"
  [ $rc = 0 ] || die "could not install clickhouse-server with apt-get (needs root or sudo, and Debian's package index)"
  [ -n "$(find_server)" ] || die "clickhouse-server is not on PATH after installing it"
}

ready() { curl -sf "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1; }

start() {
  if pid_alive "$PIDFILE" && ready; then info "ClickHouse already running on 127.0.0.1:$TCP_PORT"; return 0; fi
  port_open "$TCP_PORT" && die "port $TCP_PORT is taken by another process; set TRACKPIPE_CLICKHOUSE_PORT"
  port_open "$HTTP_PORT" && die "port $HTTP_PORT is taken by another process; set TRACKPIPE_CLICKHOUSE_HTTP_PORT"
  install
  mkdir -p "$DIR"/{log,data,tmp,user_files,format_schemas,etc}
  sed -e "s|@DIR@|$DIR|g" -e "s|@TCP_PORT@|$TCP_PORT|g" -e "s|@HTTP_PORT@|$HTTP_PORT|g" \
    "$ROOT/services/clickhouse/config.xml.in" > "$DIR/etc/config.xml"
  cp "$ROOT/services/clickhouse/users.xml" "$DIR/etc/users.xml"
  info "starting ClickHouse on 127.0.0.1:$TCP_PORT (HTTP $HTTP_PORT, logs in $DIR/log)"
  # shellcheck disable=SC2046
  nohup $(find_server) --config-file="$DIR/etc/config.xml" >"$DIR/log/stdout.log" 2>&1 &
  echo $! > "$PIDFILE"
  if ! wait_for 60 "ClickHouse" ready; then
    tail -20 "$DIR/log/stdout.log" "$DIR/log/clickhouse-server.err.log" >&2 || true
    die "ClickHouse did not answer within 60 s, see $DIR/log"
  fi
  info "ClickHouse ready on 127.0.0.1:$TCP_PORT"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_pid "$PIDFILE" ClickHouse ;;
  status) if pid_alive "$PIDFILE" && ready; then echo "ClickHouse running on 127.0.0.1:$TCP_PORT"; else echo "ClickHouse stopped"; exit 3; fi ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
