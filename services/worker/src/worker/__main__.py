"""`python -m worker`: serve the worker with hypercorn."""

from tandem_service import serve
from worker.settings import DEFAULT_PORT

raise SystemExit(serve("worker.app:app", DEFAULT_PORT))
