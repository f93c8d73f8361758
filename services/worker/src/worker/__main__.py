"""`python -m worker`: serve the worker with hypercorn."""

from tandem_service import Listener, serve
from worker.settings import DEFAULT_PORT

raise SystemExit(serve({Listener.public(DEFAULT_PORT): "worker.app:app"}))
