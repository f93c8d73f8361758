"""Tests of tandem_service and of how the services use it, in-process over real HTTP."""
