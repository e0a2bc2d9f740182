"""Helpers the tests and the benchmarks share: loopback ports, a real sshd, the demo data.

Installed with the project (``pip install -e .``), so both import it normally.
"""
