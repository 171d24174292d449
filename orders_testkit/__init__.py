"""What the tests and the benchmark both run, so that neither imports the other.

- :mod:`~orders_testkit.processes`: the API and the workers as real processes, as ``make run``
  starts them, with their logs (:mod:`~orders_testkit.json_logs` reads them).
- :mod:`~orders_testkit.rabbitmq_admin`: a vhost of a run's own, policies and queues, through
  RabbitMQ's management API.
- :mod:`~orders_testkit.execution_reports`: stored orders, their execution stories, published as
  the ingestor would.
- :mod:`~orders_testkit.fault_exchange` and :mod:`~orders_testkit.outage_workers`: the stand-in
  exchange with its own record and an outage switch, and the workers' entry point that uses it.

Not part of the service: the wheel and the image leave it out (setup.cfg, .dockerignore).
"""
