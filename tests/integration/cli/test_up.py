"""`lfz up` as a person runs it, on the embedded defaults: it starts everything, and Ctrl-C (or a child that dies)
stops everything, leaving no process behind, the training child included."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

from cli.client import ApiError, Client
from events import Topics
from infra.kafka import stop_consumer
from tests.integration.cli.conftest import Up, corpus, embedded_env
from tests.integration.stack import wait_until


def children_of(pid: int) -> list[int]:
    """Every process whose parent is `pid`, from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                children.append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def left_running(pids: set[int], timeout: float = 10.0) -> dict[int, str]:
    """Those of `pids` still running after `timeout` (a grandchild may take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {pid: command_line(pid) for pid in left}


def training_step(api: Client, job_id: str) -> int:
    try:
        return api.get_job(job_id)["step"] or 0
    except ApiError as error:
        if error.status == 404:  # not recorded yet: the worker is still starting
            return 0
        raise


def test_up_starts_everything_and_ctrl_c_stops_everything(tmp_path):
    up = Up(tmp_path)
    try:
        wait_until(up.ready, 120, "lfz up to say it is up")
        with Client(up.url) as api:
            submitted = api.create_model("long", text=corpus(), hyperparameters={"preset": "tiny",
                                                                                   "max_iters": 1_000_000})
            job_id = submitted["job_id"]
            wait_until(lambda: training_step(api, job_id) > 0, 120, "the training to report progress")
        started = descendants(up.popen.pid)
        lines = {pid: command_line(pid) for pid in started}
        assert any("tansu" in line and "broker" in line for line in lines.values()), lines
        assert any("agents worker" in line for line in lines.values()), lines
        assert any("-m gateway" in line for line in lines.values()), lines
        # The workers' server of job processes, and the training process it forked.
        assert sum("multiprocessing.forkserver" in line for line in lines.values()) >= 2, lines

        up.popen.send_signal(signal.SIGINT)
        assert up.popen.wait(90) == 0, up.output()
        assert not left_running(started)
        assert "stopped" in up.output()
        # The worker got SIGTERM first and handed the running job back: the next `lfz up` resumes it.
        with sqlite3.connect(up.data_dir / "lfz.db") as db:
            state = db.execute("SELECT state FROM job_queue WHERE job_id = ?", (job_id,)).fetchone()
            last = db.execute("SELECT type FROM job_events WHERE job_id = ? ORDER BY seq DESC LIMIT 1",
                              (job_id,)).fetchone()
        assert state == ("queued",)
        # It did so before its agents stopped: its projector recorded the checkpoint that handing the job back made
        # (the embedded broker keeps nothing, so a fact it had not recorded would be gone).
        assert last == ("CheckpointSaved",)

        # With everything stopped, the database can be rebuilt from the log it keeps.
        replayed = subprocess.run([sys.executable, "-m", "cli.main", "replay", "--from", "database", "--yes"],
                                  env=embedded_env(up.data_dir), capture_output=True, text=True, timeout=120)
        assert replayed.returncode == 0, replayed.stderr
        applied, read = (int(n) for n in replayed.stdout.split()[1:4:2])
        assert 3 < applied <= read, replayed.stdout
        with sqlite3.connect(up.data_dir / "lfz.db") as db:
            assert db.execute("SELECT model_name FROM jobs WHERE id = ?", (job_id,)).fetchone() == ("long",)
    finally:
        up.close()


def _worker_training(up_pid: int) -> int | None:
    """The pid of the worker whose training child runs, if one does."""
    for pid in children_of(up_pid):
        servers = [child for child in children_of(pid) if "multiprocessing.forkserver" in command_line(child)]
        if "agents worker" in command_line(pid) and any(children_of(server) for server in servers):
            return pid
    return None


def test_kill_9_of_a_worker_or_the_gateway_is_restarted_and_the_job_completes_once(tmp_path):
    """`lfz up --workers 2` used to stop everything when one worker died. Now it starts the dead process again, the
    gateway answers throughout (a worker's death) or within seconds (its own), and the job the dead worker was
    training completes once, taken over by the other worker."""
    up = Up(tmp_path, "--workers", "2", env={**embedded_env(tmp_path / "data"), "LFZ_LEASE_S": "6"})
    try:
        wait_until(up.ready, 120, "lfz up to say it is up")
        with Client(up.url) as api:
            job_id = api.create_model("survivor", text=corpus(), hyperparameters={
                "preset": "tiny", "max_iters": 400, "checkpoint_every": 50, "eval_every": 100})["job_id"]
            wait_until(lambda: training_step(api, job_id) >= 60, 180, "the training to pass its first checkpoint")
            victim = _worker_training(up.popen.pid)
            assert victim is not None
            os.kill(victim, signal.SIGKILL)  # as the OOM killer would
            answers = []
            while api.get_job(job_id)["status"] not in ("completed", "failed", "cancelled"):
                answers.append(httpx.get(f"{up.url}/health", timeout=5).status_code)
                time.sleep(0.5)
            job = api.get_job(job_id)
            events = [e["type"] for e in api.job_log(job_id)]
        assert job["status"] == "completed", job
        assert events.count("TrainStarted") == 2 and events.count("TrainCompleted") == 1, events
        assert answers and set(answers) == {200}, "the gateway answered throughout"
        output = up.output()
        assert "exited unexpectedly (exit code -9); restarting it in 1s" in output, output
        assert "started again" in output
        workers = [pid for pid in children_of(up.popen.pid) if "agents worker" in command_line(pid)]
        assert len(workers) == 2 and victim not in workers

        gateway, = [pid for pid in children_of(up.popen.pid) if "-m gateway" in command_line(pid)]
        os.kill(gateway, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: up.popen.poll() is None and _health(up.url) == 200, 60, "the gateway to be back")
        print(f"\ngateway back {time.monotonic() - killed:.1f}s after kill -9")
        assert up.popen.poll() is None and "Traceback" not in up.output()
        # The same deaths and restarts, as facts on the bus, for an operator who watches Kafka, not the terminal.
        bootstrap = re.search(r"broker: embedded Tansu at (\S+)", up.output()).group(1)
        facts = asyncio.run(_system_events(bootstrap, lambda seen: sum(f["type"] == "ProcessRestarted"
                                                                       for f in seen) >= 2))
        exits = {f["process"]: f for f in facts if f["type"] == "ProcessExited"}
        restarts = {f["process"]: f for f in facts if f["type"] == "ProcessRestarted"}
        worker = next(name for name, fact in exits.items() if fact["pid"] == victim)
        assert exits[worker]["exit_code"] == -9 and exits[worker]["restart_in_s"] == 1.0
        assert exits["gateway"]["pid"] == gateway and exits["gateway"]["exit_code"] == -9
        assert restarts[worker]["previous_pid"] == victim and restarts["gateway"]["previous_pid"] == gateway
        assert {f["supervisor_pid"] for f in facts} == {up.popen.pid}
        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(90) == 0, up.output()
    finally:
        up.close()


async def _system_events(bootstrap: str, until, timeout_s: float = 30.0) -> list[dict]:
    consumer = AIOKafkaConsumer(Topics().system_events, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen: list[dict] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not until(seen):
            assert time.monotonic() < deadline, f"system events so far: {seen}"
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                seen.extend(json.loads(message.value) for message in messages)
        return seen
    finally:
        await stop_consumer(consumer)


def _health(url: str) -> int:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_a_second_up_on_the_same_port_says_so(tmp_path):
    up = Up(tmp_path)
    try:
        wait_until(up.ready, 120, "lfz up to say it is up")
        again = subprocess.run([sys.executable, "-m", "cli.main", "up", "--port", str(up.port)],
                               env=embedded_env(tmp_path / "other"), capture_output=True, text=True, timeout=60)
        assert again.returncode == 1
        assert again.stderr.strip().endswith(f"error: port {up.port} on 127.0.0.1 is in use - is `lfz up` running "
                                             f"already? Use it with --url {up.url}, or pick another --port")
    finally:
        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(90) == 0
        up.close()


def test_up_with_server_urls_starts_only_the_agents_and_the_gateway(settings, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LFZ_API_KEYS"}
    env.update(LFZ_TOPIC_PREFIX=f"lfz.test.up{uuid.uuid4().hex[:10]}.", LFZ_DATA_DIR=str(tmp_path / "data"))
    up = Up(tmp_path, env=env)
    try:
        wait_until(up.ready, 120, "lfz up to say it is up")
        assert f"broker: {settings.kafka_url}" in up.output()
        started = descendants(up.popen.pid)
        lines = [command_line(pid) for pid in started]
        assert not any("tansu" in line for line in lines), lines
        assert sum("agents worker" in line for line in lines) == 1 and any("-m gateway" in line for line in lines)
        assert not (tmp_path / "data" / "lfz.db").exists()  # the database is the server's
        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(90) == 0, up.output()
        assert not left_running(started)
    finally:
        up.close()
