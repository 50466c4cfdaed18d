"""Adapters that plug trio-vlm into other evaluation tools (optional dependencies)."""
