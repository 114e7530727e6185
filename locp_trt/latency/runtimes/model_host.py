"""Whole models built and timed in a child process that holds nothing else.

Why: under ONNX Runtime CUDA a loop measures thousands of one-layer sessions in its own process,
and on the lent H200 one run's whole-model figures then drifted away from what a fresh process
measured for the same file (a plan probed at 2.26x, checked at 1.69x in the same process, 1.99x
in a fresh one), while two other runs agreed to 2%; on ONNX Runtime CPU the loop's process read a
model 6% faster than five fresh processes did. A deployed model runs in a process that
holds only its own session. So every whole-model build of such a runtime (the unpruned
reference, the probes, the final check, `bench OUT/`) is made in one child process that imports
only onnxruntime and numpy and never sees a one-layer graph; samples are timed inside the child
(`perf_counter_ns` around each run) and only the numbers cross the pipe.

`ModelHost(runtime)` starts the child on first use; `host.build(onnx, shape, precision)`
returns a sampler with the usual `sample(warmup, iters) -> µs list` interface, so
`latency.compare` cannot tell it from an in-process one. A build is released when its sampler
is garbage collected; `close()` stops the child.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ...errors import BackendUnavailableError, InvalidConfigError, LocpError
from ..config import Precision

__all__ = ["ModelHost", "HostedSampler"]

_ERRORS: dict[str, type[LocpError]] = {"InvalidConfigError": InvalidConfigError,
                                       "BackendUnavailableError": BackendUnavailableError}


def _serve(requests: Connection, conn: Connection, runtime) -> None:
    """The child's loop: build / sample / free requests until "close" or the pipe closes."""
    samplers: dict[int, Any] = {}
    while True:
        try:
            msg = requests.recv()
        except (EOFError, OSError):
            return
        op = msg[0]
        if op == "close":
            return
        if op == "free":
            for key in msg[1]:
                samplers.pop(key, None)
            continue
        try:
            if op == "build":
                _, key, onnx_bytes, shape, precision = msg
                samplers[key] = runtime._prepare_onnx_impl(onnx_bytes, tuple(shape), Precision(precision))
                conn.send(("ok", None))
            elif op == "sample":
                _, key, warmup, iters = msg
                conn.send(("ok", [float(v) for v in samplers[key](int(warmup), int(iters))]))
            else:
                conn.send(("error", "LocpError", f"unknown request {op!r}"))
        except Exception as exc:  # sent back and raised in the parent with its message
            conn.send(("error", type(exc).__name__, str(exc)))


def _child_main(read_fd: int, write_fd: int) -> None:
    """Entry point of the child (`python -c`): the runtime comes first, then requests."""
    requests, replies = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        runtime = requests.recv()
    except (EOFError, OSError):
        return
    _serve(requests, replies, runtime)


class HostedSampler:
    """A build living in the host's child process; calling it times it there."""

    def __init__(self, host: ModelHost, key: int) -> None:
        self._host, self.key, self._child = host, key, host._generation
        weakref.finalize(self, host._free, key)

    def __call__(self, warmup: int, iters: int) -> list[float]:
        if self._host._generation != self._child:
            raise LocpError("this build lived in a child process that has been closed with its runtime; "
                            "build the model again (time it before the runtime's `with` block ends)")
        return self._host._ask(("sample", self.key, int(warmup), int(iters)))


class ModelHost:
    """One child process that builds and times whole models for `runtime` (see module doc)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self._conn: Connection | None = None  # replies from the child
        self._send: Connection | None = None  # requests to the child
        self._proc: subprocess.Popen | None = None
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._released: list[int] = []  # builds whose samplers are gone, freed with the next request
        self.builds = 0  # builds made in the child so far
        self._generation = 0  # bumped when a child starts or closes: a build belongs to its child

    def _start(self) -> None:
        # A plain child interpreter (not multiprocessing's spawn, which re-runs the caller's main
        # script): it imports this module, receives the runtime, and serves requests on two pipes.
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        root = str(Path(__file__).resolve().parents[3])  # the folder holding the locp_trt package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        code = (f"from locp_trt.latency.runtimes.model_host import _child_main; "
                f"_child_main({to_child_r}, {from_child_w})")
        try:
            proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(to_child_r, from_child_w),
                                    env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._conn = Connection(from_child_r, writable=False)
        self._proc = proc
        self._generation += 1
        self._send.send(self.runtime)

    def _ask(self, msg: tuple) -> Any:
        with self._lock:
            if self._conn is None:
                self._start()
            try:
                if self._released:
                    released, self._released = self._released, []
                    self._send.send(("free", released))
                self._send.send(msg)
                status, *rest = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                code = self._proc.poll() if self._proc is not None else None
                self.close()
                raise BackendUnavailableError(
                    f"the process timing whole models on {self.runtime.name} ended (exit code "
                    f"{code}); rerun, and check the GPU with nvidia-smi if it happens again") from None
        if status == "error":
            kind, text = rest
            raise _ERRORS.get(kind, LocpError)(text)
        return rest[0]

    def build(self, onnx_bytes: bytes, input_shape: Sequence[int], precision: Precision) -> HostedSampler:
        """A fresh build (a new session) of `onnx_bytes` in the child; its sampler."""
        key = next(self._keys)
        self._ask(("build", key, onnx_bytes, tuple(int(v) for v in input_shape),
                   Precision.coerce(precision).value))
        self.builds += 1
        return HostedSampler(self, key)

    def _free(self, key: int) -> None:
        # Called by the garbage collector, possibly inside `_ask`: only note it here.
        self._released.append(key)

    def close(self) -> None:
        """Stop the child (its sessions go with it)."""
        send, conn, proc = self._send, self._conn, self._proc
        self._send = self._conn = self._proc = None
        self._generation += 1
        if send is not None:
            try:
                send.send(("close",))
            except (OSError, BrokenPipeError):
                pass
            send.close()
        if conn is not None:
            conn.close()
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
