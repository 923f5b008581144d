"""`python -m gateway`: serve the HTTP API with uvicorn on the settings' host and port (loopback by default)."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from gateway.app import create_app
from infra.process import return_large_blocks
from infra.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--host", help="address to bind (LFZ_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (LFZ_PORT; default 8000)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    return_large_blocks()  # an upload's parts of megabytes, freed, go back to the system
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.kafka_url:
        print("error: LFZ_KAFKA_URL is not set (run `make services` and source .lfz/services.env, or `lfz up`)",
              file=sys.stderr)
        return 2
    # The grace period lets open event streams end before the process does.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=5, lifespan="on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
