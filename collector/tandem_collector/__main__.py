"""``python -m tandem_collector``: run the local collector until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from tandem_collector.config import parse_config
from tandem_collector.server import serve_until_signalled


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="tandem-collector: %(levelname)s %(message)s",
    )
    try:
        return asyncio.run(serve_until_signalled(config))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 0


if __name__ == "__main__":
    sys.exit(main())
