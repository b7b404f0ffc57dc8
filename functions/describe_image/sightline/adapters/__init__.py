"""Adapters: one per outside system, each taking its client and speaking the domain's errors."""
