#!/usr/bin/env bash
# Apache Kafka as a single-node KRaft broker on loopback: `kafka.sh install|start|stop|status`.
# Jars come from Maven Central through services/kafka/pom.xml into a cache outside the repo.
source "$(dirname "$0")/lib.sh"
PORT=${TRACKPIPE_KAFKA_PORT:-9092}
CONTROLLER_PORT=${TRACKPIPE_KAFKA_CONTROLLER_PORT:-9093}
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/services/kafka/pom.xml")
JARS=$CACHE_DIR/kafka-$VERSION/jars
DIR=$RUN_DIR/kafka-$PORT
PIDFILE=$DIR/kafka.pid

install() {
  command -v java >/dev/null || die "Java is missing: install a JDK 17+ (Debian: apt-get install openjdk-17-jre-headless)"
  [ -f "$JARS/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven is missing: install it (Debian: apt-get install maven)"
  info "fetching Kafka $VERSION jars from Maven Central into $JARS"
  mkdir -p "$JARS"
  mvn -q -B -f "$ROOT/services/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$JARS" \
    || die "could not fetch the Kafka jars with Maven (is Maven Central reachable?)"
  touch "$JARS/.complete"
}

start() {
  if pid_alive "$PIDFILE" && port_open "$PORT"; then info "Kafka already running on 127.0.0.1:$PORT"; return 0; fi
  port_open "$PORT" && die "port $PORT is taken by another process; set TRACKPIPE_KAFKA_PORT"
  port_open "$CONTROLLER_PORT" && die "port $CONTROLLER_PORT is taken; set TRACKPIPE_KAFKA_CONTROLLER_PORT"
  install
  mkdir -p "$DIR/logs"
  sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$DIR/data|g" \
    "$ROOT/services/kafka/server.properties.in" > "$DIR/server.properties"
  local java=(java -Xmx512m -Xms256m -cp "$JARS/*" -Dlog4j2.configurationFile="$ROOT/services/kafka/log4j2.xml" -Dkafka.logs.dir="$DIR/logs")
  if [ ! -f "$DIR/data/meta.properties" ]; then
    local uuid; uuid=$("${java[@]}" kafka.tools.StorageTool random-uuid 2>>"$DIR/logs/format.log")
    "${java[@]}" kafka.tools.StorageTool format -t "$uuid" -c "$DIR/server.properties" >>"$DIR/logs/format.log" 2>&1 \
      || die "formatting Kafka storage failed, see $DIR/logs/format.log"
  fi
  info "starting Kafka $VERSION on 127.0.0.1:$PORT (logs in $DIR/logs)"
  nohup "${java[@]}" kafka.Kafka "$DIR/server.properties" >"$DIR/logs/stdout.log" 2>&1 &
  echo $! > "$PIDFILE"
  # The broker opens its port only once it is ready to serve.
  if ! wait_for 60 "Kafka" port_open "$PORT"; then
    tail -20 "$DIR/logs/stdout.log" "$DIR/logs/server.log" >&2 || true
    die "Kafka did not start within 60 s, see $DIR/logs"
  fi
  pid_alive "$PIDFILE" || die "Kafka exited, see $DIR/logs"
  info "Kafka ready on 127.0.0.1:$PORT"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_pid "$PIDFILE" Kafka ;;
  status) if pid_alive "$PIDFILE" && port_open "$PORT"; then echo "Kafka running on 127.0.0.1:$PORT"; else echo "Kafka stopped"; exit 3; fi ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
