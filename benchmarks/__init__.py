"""The roomcast benchmark harness: `python -m benchmarks` or `roomcast bench`.

The server under test runs in its own process; raw-socket load generators drive it from
others. See docs/benchmarks.md for the method and the latest numbers.
"""
