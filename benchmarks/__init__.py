"""Benchmarks (not tests): ``python -m benchmarks.latency`` (``make bench``); see docs/performance.md."""
