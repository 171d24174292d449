"""Everything that talks to RabbitMQ: connections, the confirmed publisher, queues, policies, dead letters."""
