#!/usr/bin/env bash
# Run the API (gunicorn) and the workers (dramatiq) in the foreground; Ctrl-C or SIGTERM stops
# both, and if either one dies the other is stopped too, so nothing is left half-running.
set -uo pipefail
bin="${VENV:-.venv}/bin"

"$bin/gunicorn" --bind "127.0.0.1:${PORT:-8000}" \
  --worker-class gthread --workers "${WEB_WORKERS:-2}" --threads "${WEB_THREADS:-16}" \
  --graceful-timeout 20 --no-control-socket --access-logfile - orders_api.wsgi:app &
api=$!
"$bin/dramatiq" workers.main --processes "${WORKER_PROCESSES:-2}" --threads "${WORKER_THREADS:-8}" &
workers=$!

stop() {
  trap - INT TERM
  kill -TERM "$api" "$workers" 2>/dev/null
  wait "$api" "$workers" 2>/dev/null
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM

echo "orders: API on http://127.0.0.1:${PORT:-8000} (pid $api), workers (pid $workers); Ctrl-C stops both"
wait -n "$api" "$workers"
status=$?
echo "orders: a process exited with status $status; stopping the other" >&2
stop
exit "$status"
