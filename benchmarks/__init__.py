"""dedup's benchmarks: ``python -m benchmarks`` (``make bench``)."""
