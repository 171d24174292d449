"""What the ingestor and the appliers must agree on: the partition queues between them.

Both read these variables through this one piece, or reports would go to queues no applier
consumes (:mod:`orders_api.adapters.rabbitmq.execution_queues`).
"""

from __future__ import annotations

from pydantic import Field

from orders_api.settings.base import SettingsBase


class ExecutionQueueSettings(SettingsBase):
    """The partition queues, and where the two roles serve their metrics."""

    execution_queue_prefix: str = Field(
        "order-executions", description="Prefix of the partition queues' names: `<prefix>.<partition>`."
    )
    #: A change moves orders to other partitions: drain the queues first (k8s/README.md).
    execution_partitions: int = Field(
        8, ge=1, description="Partition queues; more appliers than this cannot share the work."
    )
    execution_metrics_host: str = Field(
        "127.0.0.1", description="Interface the ingestor's and the appliers' metrics listen on."
    )
