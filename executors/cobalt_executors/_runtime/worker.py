"""A warm worker process: receives tasks, runs them, reports outcomes.

Started by an executor as ``python -m cobalt_executors._runtime.worker FD OUT ERR``
where FD is a connected socket and OUT/ERR are files that receive the
process's stdout and stderr (file descriptors 1 and 2, so output of C
extensions and subprocesses is captured too). Both files are truncated at
the start of every task.

The worker is a child subreaper: daemons its tasks start are reparented to
it. When a task returns or fails, every process it started that still runs
is killed, so nothing of one task lives on into the next.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

import cloudpickle

from cobalt_common.payloads import sha256_hex
from cobalt_common.v1 import worker_pb2
from cobalt_executors._runtime.framing import Readable, encode, read_message
from cobalt_executors._runtime.payloads import put_output, read_payload
from cobalt_executors._runtime.proctree import (
    become_subreaper,
    descendants,
    kill_descendants,
    reap_children,
)

LOG_LIMIT = 1 << 20
_RUNTIME_DIR = os.path.dirname(__file__)
# The SDK module whose TaskCallable wraps a task's function: its frames are cobalt's,
# not the user's. A frame of it can only appear once the module is imported, so its
# file is read from sys.modules and the worker never imports it for this.
TASK_MODULE = "cobalt._runtime.task"


class _Capture:
    """Per-task view of the process's stdout/stderr files."""

    def __init__(self, out_path: str, err_path: str) -> None:
        self._files = [open(out_path, "w+b"), open(err_path, "w+b")]  # noqa: SIM115
        for fd, f in zip((1, 2), self._files, strict=True):
            os.dup2(f.fileno(), fd)
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    def reset(self) -> None:
        for fd in (1, 2):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)

    def read(self) -> tuple[str, str]:
        sys.stdout.flush()
        sys.stderr.flush()
        return _tail(1), _tail(2)

    def append_to(self, stdout_file: str, stderr_file: str) -> str:
        """Appends the task's whole stdout and stderr to the files its executor
        named (Covalent's ``log_stdout``/``log_stderr``); returns what went wrong,
        for the task's stderr, or "". Relative paths start at the directory the
        task ended in. The worker runs the user's code anyway: writing where that
        code could write grants nothing new."""
        problems = []
        for fd, path, which in ((1, stdout_file, "stdout"), (2, stderr_file, "stderr")):
            if not isinstance(path, str) or not path:
                continue
            try:
                with open(os.path.expanduser(path), "ab") as f:
                    offset = 0
                    while chunk := os.pread(fd, 1 << 20, offset):
                        f.write(chunk)
                        offset += len(chunk)
            except OSError as exc:
                problems.append(f"cobalt: could not append the task's {which} to {path}: {exc}\n")
        return "".join(problems)


def _tail(fd: int) -> str:
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return ""
    start = max(0, size - LOG_LIMIT)
    data = os.pread(fd, size - start, start)
    text = data.decode("utf-8", errors="replace")
    return f"[... {start} bytes cut ...]\n{text}" if start else text


def format_remote_traceback(exc: BaseException) -> str:
    """The traceback of a task's exception without the runtime's own frames."""
    te = traceback.TracebackException.from_exception(exc)
    chain: list[traceback.TracebackException] = []
    node: traceback.TracebackException | None = te
    while node is not None:
        chain.append(node)
        node = node.__cause__ or (None if node.__suppress_context__ else node.__context__)
    task_module = sys.modules.get(TASK_MODULE)
    task_file = getattr(task_module, "__file__", None)
    for item in chain:
        item.stack = traceback.StackSummary.from_list(
            [
                f
                for f in item.stack
                if not f.filename.startswith(_RUNTIME_DIR) and f.filename != task_file
            ]
        )
    return "".join(te.format())


class Worker:
    def __init__(self) -> None:
        self._functions: dict[str, Any] = {}
        """Unpickled functions by sha256; the executor says which to drop."""
        self._home = os.getcwd()

    def _function(self, task: worker_pb2.WorkerTask) -> Any:
        for sha in task.forget_functions:
            self._functions.pop(sha, None)
        sha = task.function_sha256
        fn = self._functions.get(sha)
        if fn is None:
            fn = cloudpickle.loads(read_payload(sha, task.function_data, task.function_location))
            self._functions[sha] = fn
        return fn

    def run(self, task: worker_pb2.WorkerTask, capture: _Capture) -> worker_pb2.WorkerResult:
        result = worker_pb2.WorkerResult(task_key=task.task_key)
        env = {**thread_limits(task.env, os.environ), **task.env}
        saved_env = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        _limit_torch_threads(env)
        # A task starts where its client dispatched from, when that directory
        # exists here: relative paths in a notebook's electrons mean the same.
        # Modules beside the notebook stay importable from inside a task, after
        # the installed packages: the worker starts with a safe path (-P).
        working_dir = task.env.get("COBALT_WORKING_DIR", "")
        added_path = ""
        if working_dir and os.path.isdir(working_dir):
            os.chdir(working_dir)
            if working_dir not in sys.path:
                sys.path.append(working_dir)
                added_path = working_dir
        capture.reset()
        result.started_at = time.time()
        log_files: Any = ("", "")
        try:
            fn = self._function(task)
            log_files = getattr(fn, "log_files", log_files)
            args: list[Any] = []
            kwargs: dict[str, Any] = {}
            for arg in task.args:
                value = cloudpickle.loads(read_payload(arg.sha256, arg.data, arg.location))
                if arg.position >= 0:
                    args.append(value)
                else:
                    kwargs[arg.keyword] = value
            value = fn(*args, **kwargs)
            try:
                output = cloudpickle.dumps(value)
            except Exception as exc:
                raise TypeError(
                    f"the task returned a {type(value).__name__} that cannot be pickled: {exc}"
                ) from exc
            result.ok = True
            sha = sha256_hex(output)
            result.output_sha256 = sha
            result.output_size = len(output)
            if len(output) <= task.inline_limit or not put_output(
                sha, output, task.output_location
            ):
                result.output_data = output
        except BaseException as exc:
            result.ok = False
            result.reason = "exception"
            result.error = format_remote_traceback(exc)
        _end_leftovers()
        result.ended_at = time.time()
        result.stdout, result.stderr = capture.read()
        if isinstance(log_files, tuple) and len(log_files) == 2 and any(log_files):
            result.stderr += capture.append_to(*log_files)
        for key, old in saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        os.chdir(self._home)
        if added_path and added_path in sys.path:
            sys.path.remove(added_path)
        return result


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""What OpenMP, MKL and OpenBLAS read, when they load, for how many threads to start."""


def thread_limits(task_env: Mapping[str, str], process_env: Mapping[str, str]) -> dict[str, str]:
    """The thread counts a task gets from the CPUs it was given (``COBALT_CPUS``): as
    many threads as whole CPUs, at least one, at most this machine's cores. Left
    to the libraries when the task asked for no CPUs, or where the task's or the
    worker's own environment sets ``OMP_NUM_THREADS`` (someone chose).

    Without a limit every task's torch starts a thread per core of the machine,
    and two tasks on a shared machine slow each other down several times over.

    Example:
        >>> thread_limits({"COBALT_CPUS": "0.5"}, {})["OMP_NUM_THREADS"]
        '1'
        >>> thread_limits({"COBALT_CPUS": "2"}, {"OMP_NUM_THREADS": "8"})
        {}
    """
    if "OMP_NUM_THREADS" in task_env or "OMP_NUM_THREADS" in process_env:
        return {}
    try:
        cpus = float(task_env.get("COBALT_CPUS", ""))
    except ValueError:
        return {}
    if not 0 < cpus < 1e6:
        return {}
    threads = str(max(1, min(int(cpus), _cores())))
    return {name: threads for name in THREAD_VARIABLES if name not in process_env}


def _cores() -> int:
    """The cores this process may run on (an executor may declare more CPUs)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _limit_torch_threads(env: Mapping[str, str]) -> None:
    """Tells torch, if an earlier task of this warm worker loaded it, the task's
    thread count (a torch loaded now reads ``OMP_NUM_THREADS`` itself)."""
    torch = sys.modules.get("torch")
    threads = env.get("OMP_NUM_THREADS", "")
    if torch is None or not threads.isdigit() or int(threads) < 1:
        return
    with contextlib.suppress(Exception):  # a torch the task broke is the task's business
        torch.set_num_threads(int(threads))


def _end_leftovers() -> None:
    """Kills every process the task started that still runs, and reaps them."""
    try:
        # A subreaper without children has no descendants: one system call
        # instead of a walk of /proc after every task.
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return
    me = os.getpid()
    if kill_descendants(me):
        deadline = time.monotonic() + 1
        while descendants(me) and time.monotonic() < deadline:
            time.sleep(0.005)
    reap_children()


def _preload() -> None:
    """Imports what nearly every task unpickles, before the worker says it is ready."""
    with contextlib.suppress(ImportError):
        import cobalt  # noqa: F401


class _Orphaned:
    """Ends the worker's process group when its executor (the controller, an agent)
    dies while a task runs: the task is reported lost there and runs again
    elsewhere, so this copy must not go on beside it. A replica is spared: a
    restarted controller adopts the replicas that outlived it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sparing = False
        """Whether the task running now is a deployment's replica."""
        hangup = getattr(select, "POLLRDHUP", 0)
        if not hangup:  # not Linux: orphans run to their end
            return
        self._poller = select.poll()
        self._poller.register(sock.fileno(), hangup)
        threading.Thread(target=self._watch, name="cobalt-orphan-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._poller.poll():
            pass
        # The executor's end closed. Between tasks, the main thread reads the end of
        # the stream and exits; during one, only this thread notices.
        time.sleep(0.2)
        if self.sparing:
            return
        if os.getpgid(0) == os.getpid():  # its own group: the task's processes too
            os.killpg(os.getpid(), signal.SIGKILL)
        kill_descendants(os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    fd, out_path, err_path = int(argv[0]), argv[1], argv[2]
    sock = socket.socket(fileno=fd)
    stream: Readable = sock.makefile("rb", buffering=1 << 16)
    capture = _Capture(out_path, err_path)
    become_subreaper()
    _preload()
    worker = Worker()
    sock.sendall(encode(worker_pb2.WorkerMessage(ready_pid=os.getpid())))
    orphaned = _Orphaned(sock)
    command = worker_pb2.WorkerCommand()
    while read_message(stream, command) is not None:
        if command.WhichOneof("command") != "task":
            break
        orphaned.sparing = "COBALT_DEPLOYMENT" in command.task.env
        result = worker.run(command.task, capture)
        sock.sendall(encode(worker_pb2.WorkerMessage(result=result)))
        command.Clear()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
