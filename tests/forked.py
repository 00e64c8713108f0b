"""Work run in a child forked with the calling thread alone, for tests about what a process does or leaves
behind, not about how an interpreter starts (a fresh one costs some 0.4 s of CPU to import the package)."""

from __future__ import annotations

import os
import select
import signal
import warnings
from collections.abc import Callable


def fork_alone() -> int:
    """``os.fork()``: the child has the calling thread alone (the tests' archive servers stay in the parent),
    without Python 3.12's warning that this process has other threads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "this process is multi-threaded"
        return os.fork()


def forked_answer(work: Callable[[], str], timeout: float) -> str:
    """What ``work()`` returns, run in a forked child: ``"the child failed: <exception>"`` where it raised, and
    ``""`` where it gave no answer within ``timeout`` seconds (the child is then killed)."""
    reader, writer = os.pipe()
    pid = fork_alone()
    if pid == 0:
        answer = "the child failed"
        try:
            answer = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            answer = f"the child failed: {exc!r}"
        finally:
            os.write(writer, answer.encode())
            os._exit(0)
    os.close(writer)
    try:
        if not select.select([reader], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
        return os.read(reader, 1 << 16).decode()
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
