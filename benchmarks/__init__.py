"""Streaming-latency benchmarks: rustvani-trio side by side with pipecat and the raw clients.

Run everything with ``python -m benchmarks.run`` (see ``benchmarks/README.md``).
"""
