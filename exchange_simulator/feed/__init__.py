"""The exchange's execution feed, simulated: a WebSocket server of execution reports.

A real exchange streams execution reports (accepted, fills, cancellations, rejections) about
the orders sent to it. This package stands in for that feed beside :mod:`exchange_simulator.stock_exchange`
so that the ingestor and the applier can be built, tested and benchmarked against something
that behaves like one: durable positions to resume from, and repeats, reordering and dropped
connections on request. Its modules: :mod:`.stories` (what happens to one order),
:mod:`.placed_orders` (which orders), :mod:`.durable_log` (every report, numbered and on disk
before it is sent), :mod:`.producer` (stories into the log at a rate), :mod:`.faults` (a real
feed's misbehaviour), :mod:`.server` (WebSocket) and :mod:`.cli` (``orders-exchange-feed``).
"""
