"""Efficiency measurement: analytic FLOPs, KV-cache bytes, device-synchronised timings."""
