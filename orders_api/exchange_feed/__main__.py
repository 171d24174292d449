"""``python -m orders_api.exchange_feed``: the same as ``orders-exchange-feed``."""

from orders_api.exchange_feed.cli import main

main()
