"""Tandem's local collector: an OTLP receiver that answers like Tempo and a Collector's
``prometheus`` exporter, so the same assertions run locally and against the real thing.

Start it with ``python -m tandem_collector``; in tests use
:func:`tandem_collector.testing.running_collector`.
"""

from tandem_collector.config import Config
from tandem_collector.store import TraceStore

__version__ = "0.1.0"

__all__ = ["Config", "TraceStore", "__version__"]
