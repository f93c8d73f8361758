"""`python -m gateway`: serve the gateway with hypercorn."""

from gateway.settings import DEFAULT_PORT
from tandem_service import serve

raise SystemExit(serve("gateway.app:app", DEFAULT_PORT))
