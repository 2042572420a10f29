"""A small shop of three instrumented aiohttp services: gateway, order-service, payment-service."""
