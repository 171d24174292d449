"""The execution feed's processes: ``orders-ingestor`` (socket to queues), ``orders-applier`` (to rows)."""
