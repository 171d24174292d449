#!/usr/bin/env bash
# Run the API (gunicorn), the workers (dramatiq) and the reconciliation sweep (every 60 s) in the
# foreground; Ctrl-C or SIGTERM stops all three, and if one dies the others are stopped too, so
# nothing is left half-running. (In Kubernetes the sweep is a CronJob running one pass.)
set -uo pipefail
bin="${VENV:-.venv}/bin"

# Each child runs in a session of its own, so a terminal's Ctrl-C reaches only this script, which
# then sends each child exactly one SIGTERM: Dramatiq takes a second signal as "kill in-flight work".
setsid "$bin/gunicorn" --bind "127.0.0.1:${PORT:-8000}" \
  --worker-class gthread --workers "${WEB_WORKERS:-2}" --threads "${WEB_THREADS:-32}" \
  --graceful-timeout 20 --no-control-socket orders_api.wsgi:app &
api=$!
setsid "$bin/dramatiq-gevent" workers.main --processes "${WORKER_PROCESSES:-2}" --threads "${WORKER_THREADS:-128}" &
workers=$!
setsid "$bin/flask" --app orders_api.wsgi reconcile --every 60 &
reconciler=$!

stop() {
  trap - INT TERM
  kill -TERM "$api" "$workers" "$reconciler" 2>/dev/null
  wait "$api" "$workers" "$reconciler" 2>/dev/null
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM

echo "orders: API on http://127.0.0.1:${PORT:-8000} (pid $api), workers (pid $workers)," \
  "reconciliation (pid $reconciler); Ctrl-C stops all three"
wait -n "$api" "$workers" "$reconciler"
status=$?
echo "orders: a process exited with status $status; stopping the others" >&2
stop
exit "$status"
