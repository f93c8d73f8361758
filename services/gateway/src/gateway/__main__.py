"""`python -m gateway`: serve the gateway's public and internal apps with hypercorn."""

from gateway.settings import INTERNAL_LISTENER, PUBLIC_LISTENER
from tandem_service import serve

raise SystemExit(
    serve({PUBLIC_LISTENER: "gateway.app:app", INTERNAL_LISTENER: "gateway.app:internal_app"})
)
