"""payment-service: a simulated card processor with latency and failures on demand."""
