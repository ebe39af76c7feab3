"""Synthetic traffic for samples, tests and benchmarks (`generate`): never real phone numbers; and Meta's reports made up from our own charges (`meta_billing`)."""
