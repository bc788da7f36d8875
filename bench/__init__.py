"""Benchmarks: ``python -m bench`` (``make bench``) measures the CPU pipeline in one run and
prints one table (JSON in bench/results/); ``python bench/gpu.py`` measures the GPU backends.

See docs/performance.md for what is measured, how, and the figures.
"""
