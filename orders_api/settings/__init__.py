"""Every setting of the service, one class per process role, each read from the environment.

One module per role, composed of shared pieces, so that a variable is declared once:

- :mod:`~orders_api.settings.shared` (``Settings``): what every service process reads, from
  :mod:`~orders_api.settings.database`, :mod:`~orders_api.settings.broker` and
  :mod:`~orders_api.settings.logs`, and the order of their time bounds;
- :mod:`~orders_api.settings.api`, :mod:`~orders_api.settings.workers`,
  :mod:`~orders_api.settings.ingestor`, :mod:`~orders_api.settings.applier` and
  :mod:`~orders_api.settings.feed` (the simulator): each role's own, on top;
- :mod:`~orders_api.settings.roles`: which role reads which; :mod:`~orders_api.settings.check`
  validates them all (``make run`` does, first); :mod:`~orders_api.settings.table` writes the
  table of docs/configuration.md.

A process reads its settings with :func:`orders_api.settings.base.load`, which turns a bad value
into one line naming the variable, and exit status 1. The modules are imported by name, not
re-exported here, so that a probe reading one small piece loads no more than it needs.
"""
