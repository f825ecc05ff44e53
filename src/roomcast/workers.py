"""`roomcast serve --workers N`: N processes serving the same ports, one parent watching them.

Each worker is `python -m roomcast serve` with the same arguments and its own node name
(`<node>-w1`, `<node>-w2`, ...), told apart from the parent by the WORKER_NODE environment
variable; the workers open their listeners with SO_REUSEPORT, so the kernel spreads new
connections among them, and share the Redis backplane like nodes on different machines do
(each shows in `/api/stats` under `cluster.node_names`). The parent restarts a worker that
dies, and on SIGTERM/SIGINT passes the signal on so that every worker drains, then exits 0
once all have. A worker whose parent is killed gets SIGTERM (Linux), so none outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import trio

from roomcast import log
from roomcast.settings import Settings

WORKER_NODE = "_ROOMCAST_WORKER_NODE"  # set for a worker: its node name
RESTART_DELAY = 1.0  # seconds before restarting a worker that died within its first second
KILL_AFTER = 10.0  # seconds past shutdown_grace before a draining worker is killed


def _die_with_parent() -> None:
    """In a new worker, before exec: SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):  # not Linux: the worker outlives a killed parent
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def worker_node() -> str | None:
    """This process's node name when it is a worker, else None."""
    return os.environ.get(WORKER_NODE) or None


class Supervisor:
    """Starts the workers, restarts the ones that die, and drains them all on a signal."""

    def __init__(self, settings: Settings, argv: list[str]) -> None:
        self.settings = settings
        self.argv = argv
        self.processes: dict[int, trio.Process] = {}  # worker index -> live process
        self.restarts = 0
        self.draining = False

    async def run(self) -> int:
        """Run until a signal has drained every worker; 0 when all exited cleanly."""
        codes: dict[int, int] = {}
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                for index in range(1, self.settings.workers + 1):
                    nursery.start_soon(self._keep, index, codes)
                await self._drain_on_signal(signals)
        bad = {i: c for i, c in codes.items() if c != 0}
        log.event("workers stopped", workers=len(codes), restarts=self.restarts,
                  failed=",".join(f"w{i}:{c}" for i, c in sorted(bad.items())) or "none")
        return 0 if not bad else 1

    async def _keep(self, index: int, codes: dict[int, int]) -> None:
        """Keep worker `index` running until draining; record its last exit code."""
        node = f"{self.settings.node}-w{index}"
        env = {**os.environ, WORKER_NODE: node}
        while not self.draining:
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "roomcast", *self.argv], env=env,
                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            self.processes[index] = process
            log.event("worker started", worker=index, node=node, pid=process.pid)
            code = await process.wait()
            del self.processes[index]
            codes[index] = code
            if self.draining:
                log.event("worker drained", worker=index, node=node, pid=process.pid,
                          code=code)
                return
            self.restarts += 1
            log.event("worker exited; restarting it", 30, worker=index, node=node,
                      pid=process.pid, code=code)
            if trio.current_time() - started < RESTART_DELAY:
                await trio.sleep(RESTART_DELAY)  # not a restart loop at full speed

    async def _drain_on_signal(self, signals: AsyncIterator[int]) -> None:
        """The first signal is passed on to every worker as SIGTERM (each drains);
        shutdown_grace + KILL_AFTER seconds later, what is left is killed."""
        async for signum in signals:
            name = signal.Signals(signum).name
            if not self.draining:
                self.draining = True
                log.event("draining workers", signal=name, workers=len(self.processes))
                self._send(signal.SIGTERM)
                deadline = trio.current_time() + self.settings.shutdown_grace + KILL_AFTER
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._kill_at, deadline)
                    await self._all_gone()
                    nursery.cancel_scope.cancel()
                return

    async def _all_gone(self) -> None:
        while self.processes:  # noqa: ASYNC110 - the worker tasks remove their processes
            await trio.sleep(0.05)

    async def _kill_at(self, deadline: float) -> None:
        await trio.sleep_until(deadline)
        log.event("workers did not drain in time; killing them", 30,
                  pids=",".join(str(p.pid) for p in self.processes.values()))
        self._send(signal.SIGKILL)

    def _send(self, signum: int) -> None:
        for process in list(self.processes.values()):
            if process.returncode is None:
                process.send_signal(signum)


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run `settings.workers` workers with the arguments `argv` (those of this command)."""
    log.event("starting workers", workers=settings.workers, node=settings.node,
              port=settings.port, http_port=settings.http_port)
    return trio.run(Supervisor(settings, argv).run)
