"""The command line run as ``python -m isicarchive.cli`` runs it, for tests of what commands print and return:
each command in a process of its own, forked from one that has already imported the package.

Starting an interpreter and importing the facade (numpy, requests and the package) costs about half a second
of CPU per command, more than most commands' own work, and the suite runs dozens of them. The forked child
is a new process as a fresh start's would be: its own environment, working folder and standard streams (stdin
``/dev/null``, stdout and stderr captured), ``sys.argv`` and ``sys.path`` as ``python -m`` in that folder
with that ``PYTHONPATH`` sets them, ``main``'s return or ``SystemExit`` as its exit status, an uncaught
exception's traceback on stderr, and the interpreter's shutdown as far as a program sees it (threads joined,
``atexit``, the streams flushed; not the freeing of every object, ``finish`` below). What only a
fresh start shows (which modules a command imports, start-up time, signals) is tested with real interpreters
(tests/test_static.py, tests/test_first_day.py's Ctrl-C and missing-extra tests, ``serve``).

:class:`CliRunner` runs another program's command line the same way (the official ``isic`` command, whose
imports cost 0.7 s of CPU a run): give it that program's python, what to import once and how to call its
entry point. A program that reads the environment while it is imported (``pyxdg`` does) reads the parent's:
such a runner is made with the environment its commands get, and its requests cannot change it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import locale
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
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
    if request["stdin"]:  # a pipe (FIFO) for a command that asks for input; read-write: opening it never waits
        os.dup2(os.open(request["stdin"], os.O_RDWR), 0)
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


# the end of a fresh run up to where Python's shutdown (Py_FinalizeEx) has done all a program can see: threads
# that are no daemons joined, atexit handlers run (weakref.finalize's too), stdout and stderr flushed (a failed
# flush: status 120, reported as Python does); then os._exit. The rest of a shutdown frees every module and
# object, and each reference it drops writes to a page shared with this parent, which the kernel then copies:
# 0.02 s of CPU a command, half of a short one's
def finish(code):
    import atexit, threading
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception as exc:
            try:
                print(f"Exception ignored in: {stream!r}", file=sys.stderr)
                traceback.print_exception(exc)
                sys.stderr.flush()
            except Exception:
                pass
            code = 120
    return code


for line in requests_in:
    pid = os.fork()
    if pid == 0:
        requests_in.close()
        replies.close()
        os._exit(finish(run(json.loads(line))))
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
        with self._lock, tempfile.TemporaryDirectory(prefix="isicarchive-cli-") as folder:
            command, pid = self._start(args, env, cwd, Path(folder))
            status, expired = self._status(pid, timeout)
            stdout, stderr = (_text((Path(folder) / name).read_bytes()) for name in ("stdout", "stderr"))
            if expired:
                raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
            return subprocess.CompletedProcess(command, status, stdout, stderr)

    @contextlib.contextmanager
    def talk(self, args: list[str], env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
             timeout: float = 120) -> Iterator[Conversation]:
        """A command that asks for input (a sign-in's code), as ``subprocess.Popen(..., stdin=PIPE,
        stdout=PIPE, stderr=PIPE, text=True)`` runs it: its stdin is a pipe that :meth:`Conversation.communicate`
        writes to, which never ends by itself (a command reading its stdin to the end waits for ``timeout``);
        the command is killed if it has not ended ``timeout`` seconds after the block."""
        with self._lock, tempfile.TemporaryDirectory(prefix="isicarchive-cli-") as folder:
            os.mkfifo(Path(folder) / "stdin", 0o600)
            command, pid = self._start(args, env, cwd, Path(folder), stdin=True)
            conversation = Conversation(self, command, pid, Path(folder))
            try:
                yield conversation
            finally:
                conversation.wait(timeout)

    def _start(self, args: list[str], env: Mapping[str, str] | None, cwd: str | os.PathLike[str] | None,
               folder: Path, stdin: bool = False) -> tuple[list[str], int]:
        """Have the parent fork a child for the command; (the command as reported, the child's pid)."""
        if self._env is not None and env is not None and dict(env) != self._env:
            raise ValueError("this runner's commands get the environment it was made with")
        if self._command is None:
            command, argv0, path0 = [sys.executable, "-m", "isicarchive.cli", *args], None, ""
        else:
            command, argv0 = [*self._command, *args], self._command[0]
            path0 = os.path.dirname(os.path.abspath(argv0))
        env = self._env if self._env is not None else (os.environ if env is None else env)
        parent = self._started()
        assert parent.stdin is not None and parent.stdout is not None
        request = {"args": list(args), "env": dict(env), "cwd": str(cwd or os.getcwd()),
                   "stdout": str(folder / "stdout"), "stderr": str(folder / "stderr"),
                   "stdin": str(folder / "stdin") if stdin else "", "argv0": argv0 or "", "path0": path0}
        parent.stdin.write(json.dumps(request) + "\n")
        parent.stdin.flush()
        return command, json.loads(parent.stdout.readline())["pid"]

    def _status(self, pid: int, timeout: float) -> tuple[int, bool]:
        """The child's exit status once it has ended, killed after ``timeout`` seconds; (status, killed)."""
        assert self._parent is not None and self._parent.stdout is not None
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(timeout, stop)
        timer.start()
        try:
            status = json.loads(self._parent.stdout.readline())["status"]
        finally:
            timer.cancel()
        return status, expired.is_set()

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


class Conversation:
    """A command of :meth:`CliRunner.talk` while it runs: what it has printed, and its input."""

    def __init__(self, runner: CliRunner, command: list[str], pid: int, folder: Path) -> None:
        self.args = command
        self.pid = pid
        self.returncode: int | None = None
        self._runner = runner
        self._folder = folder
        self._killed = False

    def output(self) -> tuple[str, str]:
        """What it has printed so far: (stdout, stderr)."""
        printed = [self._folder / name for name in ("stdout", "stderr")]  # made by the child as it starts
        return tuple(_text(path.read_bytes()) if path.exists() else "" for path in printed)  # type: ignore[return-value]

    def ended(self) -> bool:
        if self.returncode is not None:
            return True
        try:  # the parent reaps it as it ends (its status line may already sit in our reader's buffer)
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def line_starting(self, prefix: str, timeout: float = 60) -> str:
        """The first line of its stdout that starts with ``prefix`` (blanks stripped), once printed."""
        deadline = time.monotonic() + timeout
        while True:
            stdout, stderr = self.output()
            found = [line.strip() for line in stdout.splitlines() if line.strip().startswith(prefix)]
            if found:
                return found[0]
            if self.ended() or time.monotonic() > deadline:
                raise AssertionError(f"no line starting with {prefix!r}: {stdout}{stderr}")
            time.sleep(0.02)

    def communicate(self, input: str, timeout: float = 120) -> tuple[str, str]:
        """Write ``input`` to its stdin, wait until it ends; (stdout, stderr), as ``Popen.communicate``."""
        try:  # the child holds its end open from its start (or has ended: no one reads)
            fd = os.open(self._folder / "stdin", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                os.set_blocking(fd, True)
                os.write(fd, input.encode(locale.getpreferredencoding(False)))
            finally:
                os.close(fd)
        self.wait(timeout)
        return self.output()

    def wait(self, timeout: float = 120) -> int:
        if self.returncode is None:
            self.returncode, self._killed = self._runner._status(self.pid, timeout)
            if self._killed:
                raise subprocess.TimeoutExpired(self.args, timeout, *self.output())
        return self.returncode


RUNNER = CliRunner()


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, "-m", "isicarchive.cli", *args], capture_output=True, text=True,
    stdin=DEVNULL, env=env, cwd=cwd, timeout=timeout)``, in a forked process (module docstring)."""
    return RUNNER.run(list(args), env=env, cwd=cwd, timeout=timeout)


__all__ = ["CliRunner", "Conversation", "run_cli"]
