"""Benchmarks: measurements printed side by side with a baseline taken in the same run."""
