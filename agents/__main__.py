"""`python -m agents worker`: one agents worker (Faust), configured by the LFZ_* settings."""

from __future__ import annotations

import argparse
import sys

from infra.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one agents worker until Ctrl-C or SIGTERM")
    worker.add_argument("--loglevel", default=None, help="debug, info, warning (default: LFZ_LOG_LEVEL)")
    args = parser.parse_args(argv)

    settings = load_settings()
    if not settings.kafka_url:
        print("error: LFZ_KAFKA_URL is not set; start the whole stack with `lfz up`, or point it at Kafka",
              file=sys.stderr)
        return 2

    import faust

    from agents.app import create_app
    from model.device import configure_threads

    configure_threads(settings.torch_threads or None)
    agents = create_app(settings)

    class Worker(faust.Worker):
        async def on_stop(self) -> None:
            # Before the agents stop (mode stops a service's children after its on_stop): the record agent is still
            # there to record what handing the running jobs back publishes.
            await agents.sweeps.hand_back()
            await agents.scheduler.hand_back_jobs()
            await super().on_stop()

    worker_ = Worker(agents.app, agents.runtime, loglevel=(args.loglevel or settings.log_level).lower(), quiet=True)
    worker_.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
