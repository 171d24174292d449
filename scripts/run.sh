#!/usr/bin/env bash
# Run the API (gunicorn), the workers (dramatiq), the reconciliation sweep (every 60 s) and the
# execution feed (simulator, ingestor, applier) in the foreground, under scripts/supervise.py: a
# process that dies is restarted, with a log line, after 1 s, doubling up to 30 s while it keeps
# dying. Only Ctrl-C, SIGTERM (to this script's pid, which becomes the supervisor's) or a closed
# terminal (SIGHUP) stops them all. (In Kubernetes the kubelet restarts what dies, and the sweep
# is a CronJob running one pass.)
#
# Each child runs in a session of its own, so a terminal's Ctrl-C reaches only the supervisor,
# which then sends each child exactly one SIGTERM (Dramatiq takes a second signal as "kill
# in-flight work"), waits for all of them and exits 130 (Ctrl-C) or 143 (SIGTERM).
set -euo pipefail
bin="${VENV:-.venv}/bin"
# The supervisor splits each command as a shell would: quote the one part that may hold spaces.
q="${bin@Q}"

# Prometheus' multiprocess metric files: a directory for the API's gunicorn workers and one for
# the worker pool, each emptied by its server when it starts (again after a restart). Named after
# the port, which no other `make run` can share, so runs neither mix nor pile up directories.
# The workers' metrics listen on loopback, like the API, unless dramatiq_prom_host says otherwise.
metrics_dir="${TMPDIR:-/tmp}/orders-metrics-${PORT:-8000}"
api_metrics="PROMETHEUS_MULTIPROC_DIR=${metrics_dir@Q}/api"
worker_metrics="dramatiq_prom_db=${metrics_dir@Q}/workers PROMETHEUS_MULTIPROC_DIR=${metrics_dir@Q}/workers"
worker_metrics+=" dramatiq_prom_host=${dramatiq_prom_host:-127.0.0.1}"

# The exchange's execution feed: its simulator (a stand-in, like exchange_simulator/stock_exchange.py),
# the ingestor that follows it into RabbitMQ, and the applier that writes the fills. The
# simulator's durable logs live beside the checkout, not in the temporary directory: the
# ingestor's resume point is in PostgreSQL, which outlives a reboot, and must find the log it
# points into. One log per orders database (a folder each), so another DATABASE_URL starts afresh.
feed_state="FEED_STATE_DIR=${FEED_STATE_DIR:-.state/exchange-feed}"

echo "orders: API on http://127.0.0.1:${PORT:-8000}, workers, reconciliation and the execution feed" \
  "(simulator, ingestor, applier); a process that dies is restarted; Ctrl-C stops them all"
exec "$bin/python" "$(dirname "$0")/supervise.py" \
  api "env $api_metrics $q/gunicorn --config python:orders_api.api.gunicorn_config orders_api.wsgi:app" \
  workers "env $worker_metrics $q/orders-workers" \
  reconciliation "$q/flask --app orders_api.wsgi reconcile --every 60" \
  exchange-feed "env $feed_state $q/orders-exchange-feed" \
  ingestor "$q/orders-ingestor" \
  applier "$q/orders-applier"
