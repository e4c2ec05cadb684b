"""Running workers in tests: in-process burst workers and real `arq` worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from arq.worker import Worker

from app.config import Settings
from app.workers.unified_worker import worker_kwargs
from tests.support.settings import settings_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER_COMMAND = [sys.executable, "-m", "arq", "app.workers.unified_worker.UnifiedWorkerSettings"]
STARTED_MARKER = "memory-worker "  # on_startup logs "memory-worker <id> started: ..."


def burst_worker(settings: Settings, **overrides: Any) -> Worker:
    """A worker that drains the queue and returns: `await worker.main()`, then `await worker.close()`.

    Crons are left out unless passed explicitly, so a test only runs what it enqueued.
    """
    kwargs = worker_kwargs(settings)
    kwargs.update(burst=True, poll_delay=0, cron_jobs=[], handle_signals=False)
    kwargs.update(overrides)
    return Worker(**kwargs)


class WorkerProcess:
    """`arq app.workers.unified_worker.UnifiedWorkerSettings` in a child process, its output collected."""

    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None) -> None:
        env = settings_env(settings)
        env.update(extra_env or {})
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            WORKER_COMMAND,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.append(line)
                if STARTED_MARKER in line and " started" in line:
                    self._started.set()
        self._started.set()  # the process ended: wake anyone waiting

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def wait_started(self, timeout: float = 30.0) -> None:
        started = await asyncio.to_thread(self._started.wait, timeout)
        if not started or self.process.poll() is not None:
            raise AssertionError(f"worker did not start:\n{self.output}")

    async def wait_for_line(self, text: str, timeout: float = 30.0) -> None:
        """Wait until the worker printed a line containing `text` (polling its collected output)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(text in line for line in self.lines):
            if asyncio.get_running_loop().time() > deadline or self.process.poll() is not None:
                raise AssertionError(f"worker never printed {text!r}:\n{self.output}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no cleanup, as a crash."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.wait(timeout=10)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to end by itself; returns the exit code."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)


@contextmanager
def worker_process(settings: Settings, extra_env: dict[str, str] | None = None) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(settings, extra_env)
    try:
        yield worker
    finally:
        worker.kill()
