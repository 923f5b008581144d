"""Servers of a test's own, which it may stop and start: the shared ones of `make services` must never stop.

They are started by the same scripts as `make services` (infra/services/up.sh and down.sh), with SERVICES_DIR set to
a folder of the test's and free loopback ports, so a private Kafka or PostgreSQL runs exactly as the shared one does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.stack import free_port

SCRIPTS = Path(__file__).resolve().parents[2] / "infra" / "services"


class PrivateServers:
    """`up("kafka")`, `down("kafka")`, ...; `settings()` reads the LFZ_* values of those running; `purge()` at the end
    stops them all and deletes their data."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.env = {
            **os.environ,
            "SERVICES_DIR": str(directory),
            "SERVICES_KAFKA_PORT": str(free_port()),
            "SERVICES_KAFKA_CONTROLLER_PORT": str(free_port()),
            "SERVICES_PG_PORT": str(free_port()),
            "SERVICES_PYTHON": sys.executable,
        }

    def up(self, *names: str) -> float:
        """Start the named servers and wait until they serve clients; returns the seconds that took."""
        return self._run("up.sh", *names)

    def down(self, *names: str) -> float:
        return self._run("down.sh", *names)

    def purge(self) -> None:
        self._run("down.sh", "--purge")

    def settings(self) -> dict[str, str]:
        """The LFZ_* variables that up.sh wrote for the servers running now."""
        values = {}
        for line in (self.directory / "services.env").read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                values[name] = value
        return values

    def _run(self, script: str, *args: str) -> float:
        started = time.monotonic()
        result = subprocess.run([str(SCRIPTS / script), *args], env=self.env, capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"{script} {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return time.monotonic() - started
