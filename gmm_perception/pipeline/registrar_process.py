"""Global registrations in a child process of their own, for `PoseTracker`'s background jobs.

A thread in the node's own process shares the interpreter lock with the tracked path: on 2
busy cores the tracked objects kept it and the background jobs starved (new objects waited
seconds for a first pose). The child builds its own registrar from the stage's config (the
file or library references it names), so only the clouds and the results cross over: pickles
on the child's stdin and stdout, one request at a time, answered in order.

A plain subprocess, not multiprocessing: the spawn context's resource tracker and semaphores
outlived a node stopped by Ctrl-C and their finalizers failed at exit. The child ignores
SIGINT (the node decides when it ends) and ends when its stdin closes: the node stopped, or
its process is gone, however it ended.

    python -m gmm_perception.pipeline.registrar_process   (started by RegistrarProcess only)
"""
from __future__ import annotations

import atexit
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future

import numpy as np


class RegistrarProcess:
    """An executor-like worker: `submit(fn, source, viewpoint)` runs
    `DeepGmrRegistrar.register(source, viewpoint)` in a child process holding the references of
    `config` (reference_mode file or library); `fn` is ignored (the child has its own)."""

    def __init__(self, config, device: str = "cpu", start_timeout: float = 300.0):
        """Starts the child and waits until its registrar is loaded (seconds, as the node's own
        model): started on the first job instead, on a busy machine the first objects waited
        longer than a whole 10 s bag."""
        if config.reference_mode not in ("file", "library"):
            raise ValueError("a registrar process needs file or library references")
        self.config = config
        self._child = subprocess.Popen([sys.executable, "-m", __name__],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._pending: deque[Future] = deque()
        self._requests: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        ready = Future()
        self._pending.append(ready)
        self._requests.put((config, device))
        threading.Thread(target=self._write, daemon=True, name="registrar_write").start()
        threading.Thread(target=self._read, daemon=True, name="registrar_read").start()
        try:
            self.references = ready.result(timeout=start_timeout)
        except BaseException:
            self.shutdown()
            raise
        atexit.register(self.shutdown)

    def submit(self, _fn, source: np.ndarray, viewpoint: np.ndarray | None) -> Future:
        """Queued at once (the writer thread feeds the child), answered in order."""
        future = Future()
        with self._lock:
            if self._closed:
                future.set_exception(RuntimeError("the registrar process has stopped"))
                return future
            self._pending.append(future)
            self._requests.put((source, viewpoint))
        return future

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        """Ends the child (its stdin closes; killed if it does not go within 2 s) and fails
        the jobs still pending: their objects are registered again by the next registrar."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.shutdown)  # a reconfigured node's old child: nothing to hold
        self._requests.put(None)
        try:
            self._child.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._fail_pending(RuntimeError("the registrar process has stopped"))

    def _write(self) -> None:
        stdin = self._child.stdin
        try:
            while (request := self._requests.get()) is not None:
                pickle.dump(request, stdin, protocol=pickle.HIGHEST_PROTOCOL)
                stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _read(self) -> None:
        stdout = self._child.stdout
        while True:
            try:
                status, value = pickle.load(stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                self._fail_pending(RuntimeError("the registrar process ended"))
                return
            with self._lock:
                future = self._pending.popleft() if self._pending else None
            if future is None:
                continue
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(RuntimeError(value))

    def _fail_pending(self, error: Exception) -> None:
        with self._lock:
            pending, self._pending = list(self._pending), deque()
        for future in pending:
            if not future.done():
                future.set_exception(error)


def _serve() -> None:
    """The child: the registrar of the config read first, then one answer per request."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when this process ends
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed goes to the node's log, not into the answers
    import torch

    from gmm_perception.pipeline.scene import load_registrar

    config, device = pickle.load(requests)
    torch.set_num_threads(1)  # one core's worth: the tracked path keeps the other

    def answer(status: str, value) -> None:
        pickle.dump((status, value), answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()

    try:
        registrar = load_registrar(config, torch.device(device))[0]
    except Exception as exc:  # noqa: BLE001 - reported to the node, which fails its configure
        answer("error", f"{type(exc).__name__}: {exc}")
        return
    answer("ok", len(registrar.references))
    while True:
        try:
            source, viewpoint = pickle.load(requests)
        except (EOFError, OSError):
            return  # the node closed our stdin, or is gone
        try:
            answer("ok", registrar.register(source, viewpoint))
        except Exception as exc:  # noqa: BLE001 - this job failed; the next may not
            answer("error", f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    _serve()
