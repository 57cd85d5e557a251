#!/usr/bin/env bash
# A local Prefect stack on loopback: server, process work pool, the deployments of prefect.yaml, a worker.
#   bash scripts/serve.sh start    # (make serve)   prints the API/UI URL and writes $HNSDPO_SERVE_DIR/env
#                                  # (`source .serve/env` sets PREFECT_API_URL in a new shell); PIDs there too
#   bash scripts/serve.sh stop     # (make stop-serve) stops exactly the processes `start` recorded
#   bash scripts/serve.sh status
# Settings (environment): PREFECT_PORT (4200), HNSDPO_WORK_POOL (hnsdpo-process, as in prefect.yaml), PREFECT_FILE
# (prefect.yaml), HNSDPO_SERVE_DIR (.serve), VENV (.venv). PREFECT_HOME picks where the server's
# database lives. Each process runs in its own session, so `stop` ends it with its children by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PREFECT="$VENV/bin/prefect"
HOST=127.0.0.1
PORT=${PREFECT_PORT:-4200}
POOL=${HNSDPO_WORK_POOL:-hnsdpo-process}
PREFECT_FILE=${PREFECT_FILE:-prefect.yaml}
RUN_DIR=${HNSDPO_SERVE_DIR:-.serve}
export PREFECT_API_URL="http://$HOST:$PORT/api" PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$RUN_DIR"

alive() { [[ -f "$RUN_DIR/$1.pid" ]] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

launch() {  # name, command...: run detached in a new session, record its PID
  local name=$1; shift
  setsid "$@" >"$RUN_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

wait_healthy() {
  local url="$PREFECT_API_URL/health"
  for _ in $(seq 1 120); do
    if "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "$url" 2>/dev/null; then return 0; fi
    alive server || { echo "server exited; see $RUN_DIR/server.log" >&2; tail -20 "$RUN_DIR/server.log" >&2; return 1; }
    sleep 1
  done
  echo "server not healthy after 120 s: $url" >&2; return 1
}

stop_one() {  # name: TERM the recorded process group, then KILL after 20 s
  local name=$1 pid
  [[ -f "$RUN_DIR/$name.pid" ]] || return 0
  pid=$(cat "$RUN_DIR/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name ($pid)"
  fi
  rm -f "$RUN_DIR/$name.pid"
}

case "${1:-}" in
  start)
    if alive server; then echo "server already running (pid $(cat "$RUN_DIR/server.pid"))"; else
      launch server "$PREFECT" server start --host "$HOST" --port "$PORT"
    fi
    wait_healthy
    "$PREFECT" work-pool create "$POOL" --type process --overwrite >"$RUN_DIR/pool.log" 2>&1
    "$PREFECT" --no-prompt deploy --all --prefect-file "$PREFECT_FILE" >"$RUN_DIR/deploy.log" 2>&1 \
      || { echo "prefect deploy failed; see $RUN_DIR/deploy.log" >&2; tail -30 "$RUN_DIR/deploy.log" >&2; exit 1; }
    if alive worker; then echo "worker already running (pid $(cat "$RUN_DIR/worker.pid"))"; else
      launch worker "$PREFECT" worker start --pool "$POOL" --type process
    fi
    printf 'export PREFECT_API_URL=%s\nexport PREFECT_SERVER_ANALYTICS_ENABLED=false\n' "$PREFECT_API_URL" \
      >"$RUN_DIR/env"
    echo "Prefect API $PREFECT_API_URL (UI http://$HOST:$PORT); pool $POOL; logs in $RUN_DIR/"
    echo "In a new shell, point the Prefect CLI at this server (without it, the CLI starts its own):"
    echo "  export PREFECT_API_URL=$PREFECT_API_URL      # or: source $RUN_DIR/env"
    echo "  $PREFECT deployment run hnsdpo/full -p profile=conf/tiny.yaml --watch"
    ;;
  stop)
    stop_one worker
    stop_one server
    rm -f "$RUN_DIR/env"
    ;;
  env)  # the line to eval: eval "$(bash scripts/serve.sh env)"
    echo "export PREFECT_API_URL=$PREFECT_API_URL"
    ;;
  status)
    for n in server worker; do
      if alive "$n"; then echo "$n: running (pid $(cat "$RUN_DIR/$n.pid"))"; else echo "$n: stopped"; fi
    done
    ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
