"""Tests of the local collector (tandem_collector)."""
