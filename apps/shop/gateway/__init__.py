"""gateway: the public API; validates orders and hands them to order-service."""
