"""Order placement service: accepts orders over HTTP and hands them to the stock exchange workers."""
