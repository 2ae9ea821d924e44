"""Calls in forked child processes that inherit the caller's memory: what ``videoccam ablate`` trains in.

    results = run_forked(run_variant, [(job, cache) for job in jobs], workers=2, threads=1)

Unlike a ``ProcessPoolExecutor``, the arguments are not pickled: each call runs in a child forked
for it, which finds them (a :class:`~videoccam.data.FrameCache` of several GB, say) in the memory it
shares with the parent, copy on write. Only the results come back, pickled through a pipe.
"""

from __future__ import annotations

import gc
import multiprocessing
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

import torch

__all__ = ["run_forked"]

T = TypeVar("T")


class ChildTraceback(Exception):
    """The traceback of an exception raised in a forked child (the ``__cause__`` of the re-raised one)."""


def run_forked(fn: Callable[..., T], calls: Sequence[tuple], *, workers: int = 1, threads: int | None = None,
               ) -> list[T]:
    """``[fn(*args) for args in calls]``, each call in its own child forked from this process, at most
    ``workers`` at a time, each on ``threads`` torch threads (default: this process's count).

    The first exception of a child is raised here (the child's traceback as its ``__cause__``), after
    the children still running are stopped.
    """
    context = multiprocessing.get_context("fork")
    threads = threads or torch.get_num_threads()
    results: list[Any] = [None] * len(calls)
    pending = list(enumerate(calls))
    running: dict[Connection, tuple[int, Any]] = {}  # result pipe -> (call index, process)
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                index, args = pending.pop(0)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_child, args=(send, fn, args, threads))
                _fork(process)
                send.close()  # the child holds the other end: EOF here when it dies
                running[receive] = (index, process)
            for pipe in wait(list(running)):
                index, process = running.pop(pipe)
                results[index] = _receive(pipe, process)
    finally:
        for pipe, (_, process) in running.items():  # an error above: stop the other children
            process.kill()
            process.join()
            pipe.close()
    return results


def _fork(process: Any) -> None:
    """Start ``process`` so that the child never garbage-collects what it inherited.

    Garbage of this process can own native threads that exist here only (a PyAV frame's swscale
    context with its slice threads): a child that collected it would wait forever on a thread it
    does not have. So this process's garbage is collected here first, and what is left is frozen
    (``gc.freeze``) across the fork, out of the child's collector's reach (copy-on-write friendly too).
    """
    gc.collect()
    gc.freeze()
    try:
        process.start()
    finally:
        gc.unfreeze()


def _receive(pipe: Connection, process: Any) -> Any:
    """The result a child sent (its exception raised here), once it has exited."""
    try:
        ok, value, remote = pipe.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"a forked child (pid {process.pid}) died without a result, exit code "
                           f"{process.exitcode}") from None
    finally:
        pipe.close()
    process.join()
    if not ok:
        raise value from ChildTraceback(remote)
    return value


def _child(send: Connection, fn: Callable[..., Any], args: tuple, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        message = (True, fn(*args), None)
    except BaseException as err:  # noqa: BLE001 - every error goes to the parent
        message = (False, err, traceback.format_exc())
    try:
        send.send(message)
    except Exception as err:  # noqa: BLE001 - a result or exception that does not pickle
        send.send((False, RuntimeError(f"the child's {'result' if message[0] else 'exception'} could not be "
                                       f"sent: {err!r}"), message[2] or traceback.format_exc()))
    send.close()
