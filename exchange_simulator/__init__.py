"""Simulators of the stock exchange, apart from the service: the ``place_order`` stand-in and the feed."""
