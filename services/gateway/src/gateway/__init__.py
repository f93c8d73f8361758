"""Tandem's gateway: fans work out to the worker and answers its quota checks."""

__version__ = "0.1.0"
