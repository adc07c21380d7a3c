"""`make bench`: the performance harness (docs/performance.md)."""
