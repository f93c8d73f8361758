"""The fast path's differential tests: tandem_telemetry.fastpath held to the SDK's own output.

They import SDK internals, so they run only where the fast path may run:
on the releases in fastpath.TESTED_RELEASES (the lock's). `make test`'s run
on the oldest supported SDK leaves this folder out, and says so.
"""
