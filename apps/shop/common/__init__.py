"""Pieces every service shares: errors, the order API, operations endpoints, running."""
