"""Benchmarks of interop-runtime against raw ZeroMQ, memcpy and Ray: ``python -m bench``."""
