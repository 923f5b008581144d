"""Benchmarks of the whole system: the stack they run on, what they measure with, and `python -m bench`, which
runs every benchmark one after the other and writes one JSON document and the figures of docs/benchmarks.md."""
