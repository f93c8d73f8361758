"""Tandem's worker: computes tasks for the gateway, checking each one's quota with it."""

__version__ = "0.1.0"
