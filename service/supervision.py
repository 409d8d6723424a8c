"""Process supervision: fail loudly when a process dies, drain politely on SIGTERM.

LitServe runs a main process, a ``multiprocessing`` manager (the request queues), spawned inference workers and a
forked uvicorn API process. Left alone, a dead worker makes LitServe stop the server ~31 s later while its
in-flight requests hang, and a dead API process is never noticed: the main process keeps the port bound and every
connection waits forever.

What this module does instead:

- **A process dies** (any inference worker, the API process or the manager; e.g. SIGKILL by the OOM killer): the
  main process notices within ``POLL`` seconds, tells the API process (``FAIL_SIGNAL``) to answer every request in
  flight with 503 ``unavailable`` (a started event stream gets a last ``data:{"error", "error_type"}`` event), then
  stops every process and exits with status ``EXIT_PROCESS_DIED`` — in about two seconds in all. A container's
  restart policy (or Kubernetes) then starts a fresh server. Connections held by a dead API process are closed
  by the kernel at once: the client sees a reset, never a hang.
- **SIGTERM** (``docker stop``): the API process keeps accepting connections but answers new requests with 503
  ``unavailable`` and ``Connection: close`` (``/health`` too, so load balancers stop sending), lets the requests in
  flight finish (at most ``DRAIN_TIMEOUT`` seconds), then stops; the main process then stops the workers and
  exits 0.

Why exit rather than restart: a restarted worker would come back empty while requests that were queued for it
are lost somewhere between processes, and LitServe cannot restart an API process at all; exiting gives one
clear, observable event (a non-zero exit in the orchestrator's log and restart count) and a clean server, and
costs one model load (a few seconds). ``--restart always``/``restart: unless-stopped`` is in ``docs/deploy.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import litserve as ls

from service.errors import error_body

logger = logging.getLogger("atencion.supervision")

FAIL_SIGNAL = signal.SIGUSR1  # main → API process: a process died, answer everything in flight with 503
POLL = 0.2  # seconds between the main process's liveness checks
FLUSH = 2.0  # seconds the API process gets to send its 503s before every process is stopped
DRAIN_TIMEOUT = 100.0  # seconds requests in flight may take after SIGTERM (Compose's grace: 2 minutes)
EXIT_PROCESS_DIED = 3  # the server's exit status when one of its processes died
_FAILING = threading.Lock()  # the watcher and the main thread may both see the death: one handles it

Scope = dict[str, Any]


class SupervisedLitServer(ls.LitServer):
    """A LitServer whose main process watches every child process (instead of LitServe's monitor, which
    notices only inference workers, every 2 s, and leaves their requests hanging)."""

    _stopping = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.uvicorn_graceful_timeout = DRAIN_TIMEOUT + 10  # LitServe kills the API process after this

    _watched: list[tuple[str, Any]] = []
    _api_processes: list[Any] = []

    def _start_worker_monitoring(self, manager: Any, uvicorn_workers: dict[Any, Any]) -> None:
        self._api_processes = list(uvicorn_workers.values())
        self._watched = [("API process", p) for p in self._api_processes]
        self._watched += [(f"inference worker {p.name}", p) for p in self.inference_workers]
        if getattr(manager, "_process", None) is not None:
            self._watched.append(("queue manager process", manager._process))
        threading.Thread(target=self._watch, daemon=True, name="atencion-supervisor").start()

    def _perform_graceful_shutdown(
        self, manager: Any, uvicorn_workers: dict, shutdown_reason: str = "normal"
    ):
        if not self._stopping and shutdown_reason != "keyboard_interrupt":
            # LitServe's main thread stopped waiting without a signal: a child died under it (the queue manager,
            # whose socket closes a moment before the process can be reaped): fail, do not drain
            deadline = time.monotonic() + 1.0
            while (dead := self._dead()) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            self._fail(*(dead or ("queue manager process", manager._process)))
        self._stopping = True  # processes stopping from here on are expected to
        return super()._perform_graceful_shutdown(manager, uvicorn_workers, shutdown_reason)

    def _dead(self) -> tuple[str, Any] | None:
        return next(((kind, p) for kind, p in self._watched if not p.is_alive()), None)

    def _watch(self) -> None:
        while not self._stopping:
            dead = self._dead()
            if dead is not None and not self._stopping:
                self._fail(*dead)
            time.sleep(POLL)

    def _fail(self, kind: str, process: Any) -> None:
        """503 for everything in flight, then stop every process and exit non-zero (never returns)."""
        _FAILING.acquire()  # a second caller waits here until the process exits
        self._stopping = True
        say(
            f"{kind} (pid {process.pid}) died with exit code {process.exitcode}: answering requests in "
            f"flight with 503 and exiting with status {EXIT_PROCESS_DIED} so that the server is restarted"
        )
        for api in self._api_processes:
            if api.is_alive():
                os.kill(api.pid, FAIL_SIGNAL)
        deadline = time.monotonic() + FLUSH
        while any(api.is_alive() for api in self._api_processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in mp.active_children():  # workers, API process, manager: nothing is left behind
            child.kill()
        for child in mp.active_children():
            child.join(timeout=2)
        os._exit(EXIT_PROCESS_DIED)


def say(message: str) -> None:
    print(f"atencion: {message}", file=sys.stderr, flush=True)


# ---- the API process's side -----------------------------------------------------------------------------------
class _InFlight:
    """One request being answered: whether its response has started or ended, and its stream kind."""

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.event_stream = False


class SupervisionMiddleware:
    """The outermost middleware of the API process: counts requests in flight, drains on SIGTERM, and on the
    main process's ``FAIL_SIGNAL`` (or the main process's death) answers everything in flight with 503."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.state = "serving"  # serving | draining | failed
        self.in_flight: set[asyncio.Future] = set()
        self.failed: asyncio.Future | None = None
        self.installed = False
        self.stop_uvicorn: Callable[[int, Any], Any] | None = None
        self.parent = os.getppid()

    def install(self) -> None:
        """Once, in the API process's event loop: take over SIGTERM from uvicorn (drain first), listen for
        ``FAIL_SIGNAL``, watch the main process."""
        self.installed = True
        loop = asyncio.get_running_loop()
        self.failed = loop.create_future()
        previous = signal.getsignal(signal.SIGTERM)
        self.stop_uvicorn = previous if callable(previous) else None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda s, f: loop.call_soon_threadsafe(self.drain))
            signal.signal(
                FAIL_SIGNAL, lambda s, f: loop.call_soon_threadsafe(self.fail, "a server process died")
            )
        loop.create_task(self.watch_parent())

    async def watch_parent(self) -> None:
        while self.state != "failed":
            if os.getppid() != self.parent:
                self.fail("the main server process died")
                return
            await asyncio.sleep(0.5)

    def drain(self) -> None:
        if self.state == "serving":
            self.state = "draining"
            asyncio.get_running_loop().create_task(self.stop_when_idle())

    async def stop_when_idle(self) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.stop()

    def fail(self, reason: str) -> None:
        if self.state == "failed":
            return
        self.state = "failed"
        self.reason = reason
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(reason)
        asyncio.get_running_loop().call_later(0.5, self.stop)  # after the 503s went out

    def stop(self) -> None:
        if self.stop_uvicorn is not None:
            self.stop_uvicorn(signal.SIGTERM, None)  # uvicorn's own graceful exit
        else:
            os.kill(os.getpid(), signal.SIGKILL)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if not self.installed:
            self.install()
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.state != "serving":
            message = (
                "the server is shutting down: retry on another instance or in a moment"
                if self.state == "draining"
                else f"the server cannot answer ({self.reason}); it is restarting: retry in a moment"
            )
            return await unavailable(send, message)
        request = _InFlight()

        async def tracked_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                request.started = True
                headers = dict(message.get("headers", []))
                request.event_stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")
                if self.state == "draining":  # no keep-alive on a server that is going away
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                request.finished = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, tracked_send))
        self.in_flight.add(task)
        try:
            await asyncio.wait({task, self.failed}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            try:
                await task
            except BaseException:  # the request was cut short on purpose
                pass
            await self.cut_short(request, send)
        finally:
            self.in_flight.discard(task)

    async def cut_short(self, request: _InFlight, send: Callable) -> None:
        message = (
            f"the server cannot finish this request ({self.reason}); it is restarting: retry in a moment"
        )
        if request.finished:
            return
        if not request.started:
            return await unavailable(send, message)
        tail = b""
        if request.event_stream:
            tail = ("data:" + json.dumps(error_body(message, "unavailable")) + "\n\n").encode()
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def unavailable(send: Callable, message: str) -> None:
    body = json.dumps(error_body(message, "unavailable")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"retry-after", b"5"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
