"""Dramatiq workers that place committed orders on the stock exchange, started by ``orders-workers``.

The one entry is ``orders-workers`` (:mod:`workers.serve`): it reads the settings and execs
Dramatiq's gevent CLI through :mod:`workers.dramatiq_cli` (the CLI's main process with the
service's logging), whose worker processes import :mod:`workers.main`, the module-level broker
Dramatiq's CLI requires; it is built by :func:`workers.bootstrap.bootstrap`, the one place the
workers are wired.
"""
