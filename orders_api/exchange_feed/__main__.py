"""``python -m orders_api.exchange_feed``: the same as ``orders-exchange-feed``.

Guarded, so that importing every module (as the image's tests do) does not start a feed.
"""

from orders_api.exchange_feed.cli import main

if __name__ == "__main__":
    main()
