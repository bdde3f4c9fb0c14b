"""Benchmarks of regioncl (training steps, the lightly comparison, the data pipeline); not part of the package.

Run them with ``python scripts/benchmark.py``; they import regioncl as installed or from the clone.
"""
