#!/usr/bin/env bash
# A headless-Chromium look at the MLflow UI: starts `mlflow ui` on 127.0.0.1 (a free port), opens the
# experiment's page, writes a screenshot and the rendered DOM, stops the server by its PID.
#   bash scripts/mlflow_ui_screenshot.sh [BACKEND_URI] [OUT_PREFIX] [EXPERIMENT_ID]
#   defaults: sqlite:///artifacts/mlflow.db, artifacts/mlflow-ui (→ .png and .html), the newest experiment
# Needs a Chromium (CHROMIUM=/path, or chromium / chromium-browser / google-chrome / headless_shell on PATH);
# exits 3 when there is none. Leaves the browser's workflow type at its default (no ?workflowType=…), so
# the screenshot shows what a new user sees; WORKFLOW=machine_learning adds ?workflowType=machine_learning,
# the link that `hnsdpo run` prints. (Seen with MLflow 3.17.2 and Chromium 156: with the default the UI
# opens on the GenAI "Overview" of traces whatever the experiment's mlflow.experimentKind tag says — the
# UI's global GenAI / Model training switch, stored in the browser, decides; with the parameter it opens
# on the runs table.)
set -euo pipefail
cd "$(dirname "$0")/.."
URI=${1:-sqlite:///artifacts/mlflow.db}
OUT=${2:-artifacts/mlflow-ui}
EXP=${3:-}
VENV=${VENV:-.venv}
BROWSER=${CHROMIUM:-}
if [[ -z "$BROWSER" ]]; then
  for b in chromium chromium-browser google-chrome google-chrome-stable headless_shell; do
    if command -v "$b" >/dev/null 2>&1; then BROWSER=$(command -v "$b"); break; fi
  done
fi
[[ -n "$BROWSER" ]] || { echo "no chromium found (set CHROMIUM=/path/to/chrome)" >&2; exit 3; }
if [[ -z "$EXP" ]]; then
  EXP=$("$VENV/bin/python" - "$URI" <<'PY'
import sys
from mlflow import MlflowClient
exps = [e for e in MlflowClient(tracking_uri=sys.argv[1]).search_experiments() if e.name != "Default"]
print(max(exps, key=lambda e: e.creation_time or 0).experiment_id if exps else "0")
PY
)
fi
PORT=$("$VENV/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
mkdir -p "$(dirname "$OUT")"
setsid "$VENV/bin/mlflow" ui --backend-store-uri "$URI" --host 127.0.0.1 --port "$PORT" --workers 1 \
  >"$OUT.server.log" 2>&1 </dev/null &
PID=$!
cleanup() { kill -TERM -- "-$PID" 2>/dev/null || kill -TERM "$PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 90); do
  "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$PORT/health" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { echo "mlflow ui exited; see $OUT.server.log" >&2; exit 1; }
  sleep 1
done
URL="http://127.0.0.1:$PORT/#/experiments/$EXP${WORKFLOW:+?workflowType=$WORKFLOW}"
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,900
       --virtual-time-budget=20000 --user-data-dir="$(mktemp -d)")
"$BROWSER" "${flags[@]}" --screenshot="$OUT.png" "$URL" >/dev/null 2>&1
"$BROWSER" "${flags[@]}" --dump-dom "$URL" >"$OUT.html" 2>/dev/null
echo "screenshot: $OUT.png  dom: $OUT.html  ($URL)"
