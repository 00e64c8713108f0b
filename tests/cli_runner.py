"""The command line run as ``python -m isicarchive.cli`` runs it, for tests of what commands print and return:
each command in a process of its own, forked from one that has already imported the package.

Starting an interpreter and importing the facade (numpy, requests and the package) costs about half a second
of CPU per command, more than most commands' own work, and the suite runs dozens of them. The forked child
is a new process as a fresh start's would be: its own environment, working folder and standard streams (stdin
``/dev/null``, stdout and stderr captured), ``sys.argv`` and ``sys.path`` as ``python -m`` in that folder
with that ``PYTHONPATH`` sets them, ``main``'s return or ``SystemExit`` as its exit status, an uncaught
exception's traceback on stderr, and the interpreter's own shutdown (threads joined, ``atexit``). What only a
fresh start shows (which modules a command imports, start-up time, signals) is tested with real interpreters
(tests/test_static.py, tests/test_first_day.py's Ctrl-C and missing-extra tests, ``serve``).

:class:`CliRunner` runs another program's command line the same way (the official ``isic`` command, whose
imports cost 0.7 s of CPU a run): give it that program's python, what to import once and how to call its
entry point. A program that reads the environment while it is imported (``pyxdg`` does) reads the parent's:
such a runner is made with the environment its commands get, and its requests cannot change it.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

#: the parent: imports what every command imports first (PRELOAD), then forks a child per request (one JSON
#: line on its stdin) that calls the entry point (CALL, with ``args``), and answers with the child's pid, then
#: with its exit status
PARENT = r"""
import json, os, sys, traceback
requests_in, replies = os.fdopen(os.dup(0), "r"), os.fdopen(os.dup(1), "w")
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
PRELOAD
# what the imports made is never garbage: kept out of the collector's sight, a child's collections and its
# shutdown do not walk (and copy) the parent's pages (0.09 -> 0.04 s of CPU a command)
import gc
gc.freeze()
start_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
site_path = [p for p in sys.path[1:] if p not in start_path]


def run(request):
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [os.path.abspath(p) for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["path0"] or os.getcwd(), *extra, *site_path]
    os.dup2(os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
    os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
    args = request["args"]
    sys.argv = [request["argv0"] or sys.modules["isicarchive.cli"].__file__, *args]
    try:
        code = CALL
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    return code


for line in requests_in:
    pid = os.fork()
    if pid == 0:
        requests_in.close()
        replies.close()
        sys.exit(run(json.loads(line)))  # the interpreter's own shutdown, as at the end of a fresh run
    replies.write(json.dumps({"pid": pid}) + "\n")
    replies.flush()
    replies.write(json.dumps({"status": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}) + "\n")
    replies.flush()
"""


def _text(data: bytes) -> str:
    """As ``subprocess.run(text=True)`` decodes a stream."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


class CliRunner:
    """One parent process, started on first use; :meth:`run` is ``subprocess.run`` of the command line.

    By default ``python -m isicarchive.cli`` in this interpreter; ``python``, ``preload``, ``call`` (an
    expression of ``args``), ``command`` (what :meth:`run` reports as run; its first item is ``sys.argv[0]``
    and its folder ``sys.path[0]``, as for a console script) and ``env`` (fixed for the parent and every
    command) run another program's command line.
    """

    def __init__(self, python: str = sys.executable, preload: str = "import isicarchive.api, isicarchive.cli",
                 call: str = "isicarchive.cli.main(args)", command: list[str] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self._python = python
        self._source = PARENT.replace("PRELOAD", preload).replace("CALL", call)
        self._command = command
        self._env = dict(env) if env is not None else None
        self._parent: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def _started(self) -> subprocess.Popen[str]:
        if self._parent is None or self._parent.poll() is not None:
            self._parent = subprocess.Popen([self._python, "-c", self._source], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
                                            env=self._env)
            atexit.register(self.close)
        return self._parent

    def __enter__(self) -> CliRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, args: list[str], env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if self._env is not None and env is not None and dict(env) != self._env:
            raise ValueError("this runner's commands get the environment it was made with")
        if self._command is None:
            command, argv0, path0 = [sys.executable, "-m", "isicarchive.cli", *args], None, ""
        else:
            command, argv0 = [*self._command, *args], self._command[0]
            path0 = os.path.dirname(os.path.abspath(argv0))
        env = self._env if self._env is not None else (os.environ if env is None else env)
        with self._lock, tempfile.TemporaryDirectory(prefix="isicarchive-cli-") as folder:
            parent = self._started()
            assert parent.stdin is not None and parent.stdout is not None
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {"args": list(args), "env": dict(env), "cwd": str(cwd or os.getcwd()), "stdout": str(out),
                       "stderr": str(err), "argv0": argv0 or "", "path0": path0}
            parent.stdin.write(json.dumps(request) + "\n")
            parent.stdin.flush()
            pid = json.loads(parent.stdout.readline())["pid"]
            expired = threading.Event()

            def stop() -> None:
                expired.set()
                os.kill(pid, signal.SIGKILL)

            timer = threading.Timer(timeout, stop)
            timer.start()
            try:
                status = json.loads(parent.stdout.readline())["status"]
            finally:
                timer.cancel()
            stdout, stderr = _text(out.read_bytes()), _text(err.read_bytes())
            if expired.is_set():
                raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
            return subprocess.CompletedProcess(command, status, stdout, stderr)

    def close(self) -> None:
        parent, self._parent = self._parent, None
        if parent is not None and parent.poll() is None:
            assert parent.stdin is not None
            parent.stdin.close()
            try:
                parent.wait(10)
            except subprocess.TimeoutExpired:
                parent.kill()
                parent.wait()
        if parent is not None and parent.stdout is not None:
            parent.stdout.close()


RUNNER = CliRunner()


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, "-m", "isicarchive.cli", *args], capture_output=True, text=True,
    stdin=DEVNULL, env=env, cwd=cwd, timeout=timeout)``, in a forked process (module docstring)."""
    return RUNNER.run(list(args), env=env, cwd=cwd, timeout=timeout)


__all__ = ["CliRunner", "run_cli"]
