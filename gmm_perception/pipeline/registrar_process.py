"""Global registrations in a child process of their own, for `PoseTracker`'s background jobs.

A thread in the node's own process shares the interpreter lock with the tracked path: on 2
busy cores the tracked objects kept it and the background jobs starved (new objects waited
seconds for a first pose). The child builds its own registrar from the stage's config (the
file or library references it names), so only the clouds and the results cross over.
"""
from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

_REGISTRAR = None  # the child's registrar


def _start(config, device: str) -> None:
    global _REGISTRAR
    import torch

    from gmm_perception.pipeline.scene import load_registrar

    torch.set_num_threads(1)  # one core's worth: the tracked path keeps the other
    _REGISTRAR = load_registrar(config, torch.device(device))[0]


def _register(source: np.ndarray, viewpoint: np.ndarray | None):
    return _REGISTRAR.register(source, viewpoint)


def _ready() -> int:
    return len(_REGISTRAR.references)


class RegistrarProcess:
    """An executor-like pool of one child process running `DeepGmrRegistrar.register` for the
    references of `config` (reference_mode file or library)."""

    def __init__(self, config, device: str = "cpu", start_timeout: float = 300.0):
        """Starts the child and waits until its registrar is loaded (seconds, as the node's own
        model): started on the first job instead, on a busy machine the first objects waited
        longer than a whole 10 s bag."""
        if config.reference_mode not in ("file", "library"):
            raise ValueError("a registrar process needs file or library references")
        self.config = config
        self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"),
                                         initializer=_start, initargs=(config, device))
        try:
            self.references = self._pool.submit(_ready).result(timeout=start_timeout)
        except BaseException:
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise

    def submit(self, _register_here, source: np.ndarray, viewpoint: np.ndarray | None
               ) -> Future:
        """Like Executor.submit(registrar.register, source, viewpoint), run in the child."""
        return self._pool.submit(_register, source, viewpoint)

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
