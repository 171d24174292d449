#!/usr/bin/env bash
# Start PostgreSQL and RabbitMQ on this machine if they are not running, and enable RabbitMQ's
# management console (tests use its HTTP API to create a vhost per run). Safe to run repeatedly.
set -euo pipefail

wait_for() { # wait_for DESCRIPTION SECONDS COMMAND...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "ensure-services: $what did not come up within ${seconds}s" >&2
  return 1
}

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "ensure-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  echo "ensure-services: starting RabbitMQ"
  rabbitmq-server -detached
  wait_for RabbitMQ 90 rabbitmqctl -q await_startup
fi

if ! rabbitmq-plugins -q is_enabled rabbitmq_management >/dev/null 2>&1; then
  echo "ensure-services: enabling the RabbitMQ management console"
  rabbitmq-plugins -q enable rabbitmq_management
fi
wait_for "RabbitMQ management API" 60 curl -sf -u guest:guest http://127.0.0.1:15672/api/overview
echo "ensure-services: PostgreSQL and RabbitMQ (with management on :15672) are up"
