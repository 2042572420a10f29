"""order-service: stores orders in SQLite and has payment-service charge them."""
