# One image for every role: the API (the default command), the workers (`orders-workers`), the
# migration (`orders-db-upgrade`), the broker setup (`orders-broker-setup`), the reconciliation
# sweep and the operator commands (`flask --app orders_api.wsgi ...`). Kubernetes and Compose pick
# the role with `command`; nothing else differs, so what was tested is what every role runs.

# --- build: turn the source into a wheel and install it, with its dependencies, into /opt/venv ---
# Both stages use the same base: the venv's `python` is a symlink to the base image's interpreter.
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
RUN python -m venv /opt/venv

# The dependencies first, in a layer of their own that a change to our code does not invalidate:
# exactly the versions in requirements/image.txt (`make lock`), each checked against its hash.
# `--only-binary`: a dependency without a wheel for this platform fails the build here rather
# than quietly needing a compiler (the slim base has none; psycopg2-binary, gevent, greenlet
# and SQLAlchemy ship manylinux wheels). Production dependencies only: no `dev` extra.
COPY requirements/image.txt ./requirements/
RUN /opt/venv/bin/python -m pip install --require-hashes --only-binary=:all: -r requirements/image.txt

# Only what the wheel is built from; .dockerignore keeps everything else out of the context.
COPY pyproject.toml setup.cfg README.md ./
COPY orders_api ./orders_api
COPY workers ./workers
COPY exchange_simulator ./exchange_simulator

# A wheel, not an editable install: the final stage needs no source tree. `--no-deps`: the
# dependencies are the pinned ones above, and `pip check` fails the build if they do not
# satisfy setup.cfg's ranges (a stale lock).
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/python -m pip install --no-deps /wheels/orders_service-*.whl \
    && /opt/venv/bin/python -m pip check

# --- final: the slim base, the venv and an unprivileged user; no compilers, no source ---
FROM python:3.11.13-slim-bookworm

# A fixed numeric uid (the contract's 10001) so Kubernetes' `runAsNonRoot` can verify it without
# reading /etc/passwd. The passwd entry still exists because libpq looks the user up when a URL
# names none. `-l`: no lastlog/faillog entry, which for a high uid is a sparse file of gigabytes.
# /var/lib/exchange-feed: where the feed simulator keeps its durable log in Compose, on a named
# volume, which takes this directory's owner when it is first mounted.
RUN groupadd --system --gid 10001 orders \
    && useradd --system --no-log-init --uid 10001 --gid orders \
       --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin orders \
    && install --directory --owner orders --group orders /var/lib/exchange-feed

# The venv stays owned by root: the service cannot rewrite its own code. The only writable path
# it needs is /tmp (workers' heartbeat files, gunicorn's worker files, Prometheus' multiprocess
# files), an emptyDir in Kubernetes and a tmpfs in Compose.
COPY --from=build /opt/venv /opt/venv

# BIND: gunicorn listens on every interface inside the container (gunicorn_config.py falls back
# to loopback elsewhere). PYTHONUNBUFFERED: log lines reach `docker logs` / the kubelet at once.
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only; pip compiled the bytecode at install.
ENV PATH=/opt/venv/bin:$PATH \
    BIND=0.0.0.0:8000 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

# 8000: the API and its /metrics. 9191: the workers' Prometheus exporter (Dramatiq's middleware).
# 9192, 9193: the ingestor's and the applier's metrics.
EXPOSE 8000 9191 9192 9193

# No HEALTHCHECK: the probes differ by role (HTTP for the API, `python -m workers.liveness` for
# the workers, none for one-shot jobs); Compose and Kubernetes declare them per service.
# Exec form, no shell and no ENTRYPOINT: gunicorn (or the role's command, which replaces this one
# whole) is PID 1 and receives SIGTERM itself, and starts its graceful shutdown.
CMD ["gunicorn", "--config", "python:orders_api.api.gunicorn_config", "orders_api.wsgi:app"]
