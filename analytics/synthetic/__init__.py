"""Synthetic traffic for samples, tests and benchmarks (`generate`): never real phone numbers."""
