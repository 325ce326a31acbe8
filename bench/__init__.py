"""Benchmark of the release pipeline against a stock-tool shell baseline.

``python3 bench/run.py`` is the entry point (see ``bench/README.md``).
"""
