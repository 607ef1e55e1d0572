"""latency_models."""
