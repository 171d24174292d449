"""``python -m exchange_simulator.feed``: the same as ``orders-exchange-feed``.

Guarded, so that importing every module (as the image's tests do) does not start a feed.
"""

from exchange_simulator.feed.cli import main

if __name__ == "__main__":
    main()
