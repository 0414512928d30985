"""A long-lived driver: `tally driver start` keeps one warm Spark session, and the project's `tally` commands run in
it instead of each starting a JVM of its own.

A fresh process pays 5-9 s before its first result: the JVM, the session, class loading, code generation and JIT
on the first plans (bench/README.md, "The user's path"). The driver pays that once: it starts the session, runs a
small representative workload (`tally.spark.representative_workload`) to warm it, and then serves commands, each
costing its own work plus the client's Python start.

- **Where.** A Unix socket in a folder only this user may enter (`runtime_dir()`), named by a hash of the project's
  warehouse, with an info file beside it (pid, master, Spark settings, build) and the driver's log. No network port.
- **Which commands.** `tally.cli.main` asks `forward()` first: a command of a project whose driver answers, with the
  same master, Spark settings and build (tally's version, the JAR, the Python sources) as this process would use, is
  sent there: its arguments, working folder and TALLY_* environment. The driver runs the same click commands and
  sends back stdout, stderr and the exit code, so output and exit codes are those of a local run. Anything else runs
  in its own process as before, with a note on stderr when a driver was there but did not match. `stream`, `serve`,
  `demo` and `driver` always run locally; TALLY_DRIVER=off turns forwarding off.
- **One at a time.** Commands run one after another in the one session; a waiting client says what it waits for.
- **Ctrl-C.** A client that goes away cancels its command's Spark jobs; the command fails as any failed run does
  (nothing half-written is committed).
- **Idle.** A driver that has run no command for its idle timeout (default 3 h, as build daemons do) stops by
  itself, so that a forgotten one does not hold its memory for good.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from tally import kernels
from tally.errors import UsageError

LOCAL_COMMANDS = frozenset({"driver", "stream", "serve", "demo"})
PROTOCOL = 1
IDLE_TIMEOUT = "3h"


@dataclass(frozen=True)
class Paths:
    socket: Path
    info: Path
    log: Path


def runtime_dir() -> Path:
    """$TALLY_RUNTIME_DIR, else tally-<uid> in the temp folder: created private (0700), refused if anyone else may
    enter it (another user could then talk to the driver, which runs commands as this one)."""
    folder = Path(os.environ.get("TALLY_RUNTIME_DIR") or Path(tempfile.gettempdir()) / f"tally-{os.getuid()}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise UsageError(f"driver folder {folder} is not private to this user (mode {st.st_mode & 0o777:o})",
                         hint=f"chmod 700 {folder}, or set TALLY_RUNTIME_DIR to a private folder")
    return folder


def paths(warehouse: str) -> Paths:
    name = hashlib.sha256(str(Path(warehouse).resolve()).encode()).hexdigest()[:16]
    folder = runtime_dir()
    return Paths(folder / f"{name}.sock", folder / f"{name}.json", folder / f"{name}.log")


def build() -> dict:
    """What the code a command would run is: tally's version, the JAR (path, size, mtime) and the newest mtime of
    tally's Python files. A driver started before a rebuild or an edit no longer matches."""
    from tally import __version__
    from tally.spark import jar_path

    jar = jar_path()
    try:
        st = jar.stat()
        jar_id = [str(jar.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        jar_id = [str(jar), None, None]
    package = Path(__file__).resolve().parent
    newest = max(p.stat().st_mtime_ns for p in package.rglob("*.py"))
    return {"tally": __version__, "jar": jar_id, "python": newest}


def _identity(config) -> dict:
    return {"warehouse": config.warehouse, "master": config.master, "spark_conf": dict(config.spark_conf),
            "build": build()}


def _differences(mine: dict, theirs: dict) -> list[str]:
    return [key for key in ("warehouse", "master", "spark_conf", "build") if mine[key] != theirs.get(key)]


def read_info(p: Paths) -> dict | None:
    try:
        return json.loads(p.info.read_text())
    except (OSError, ValueError):
        return None


# ---- the wire: one JSON object per line, each way ----

def _send(wfile, lock: threading.Lock, message: dict) -> None:
    data = (json.dumps(message) + "\n").encode()
    with lock:
        wfile.write(data)
        wfile.flush()


def _connect(p: Paths, timeout: float | None = None) -> socket.socket | None:
    """A connection to the driver at `p`, or None when there is none (no socket, or one a dead driver left)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(p.socket))
    except OSError:
        sock.close()
        return None
    return sock


def ask(p: Paths, op: str, timeout: float = 10.0) -> dict | None:
    """A one-line request (`status`, `stop`) and its one-line answer; None when no driver answers."""
    sock = _connect(p, timeout)
    if sock is None:
        return None
    with sock, sock.makefile("rwb") as f:
        _send(f, threading.Lock(), {"protocol": PROTOCOL, "op": op})
        line = f.readline()
    return json.loads(line) if line else None


# ---- the client side ----

def forward(args: list[str]) -> int | None:
    """Run `tally ARGS` in this project's driver and return its exit code; None to run it in this process."""
    if os.environ.get("TALLY_DRIVER", "").lower() in ("off", "0", "false", "no"):
        return None
    request = _forwardable(args)
    if request is None:
        return None
    p, config = request
    info = read_info(p)
    if info is None or not p.socket.exists():
        return None
    differ = _differences(_identity(config), info)
    if differ:
        print(f"tally: the driver for {config.warehouse} (pid {info.get('pid')}) runs with another "
              f"{', '.join(differ)}; running this command in its own process (restart it: tally driver stop, "
              f"tally driver start)", file=sys.stderr)
        return None
    sock = _connect(p)
    if sock is None:
        return None
    env = {k: v for k, v in os.environ.items() if k.startswith("TALLY_")}
    with sock, sock.makefile("rwb") as f:
        try:
            _send(f, threading.Lock(), {"protocol": PROTOCOL, "op": "run", "argv": list(args), "cwd": os.getcwd(),
                                        "env": env, "tty": [sys.stdout.isatty(), sys.stderr.isatty()]})
            for line in f:
                message = json.loads(line)
                if "out" in message:
                    sys.stdout.write(message["out"])
                    sys.stdout.flush()
                elif "err" in message:
                    sys.stderr.write(message["err"])
                    sys.stderr.flush()
                elif "wait" in message:
                    print(f"tally: waiting for the driver, busy with: tally {' '.join(message['wait'])}",
                          file=sys.stderr)
                elif "exit" in message:
                    return int(message["exit"])
        except KeyboardInterrupt:
            print("aborted (the driver cancels the command's Spark jobs)", file=sys.stderr)
            return 130
        except BrokenPipeError:  # the reader of our output left (`tally list | head`): so do we, quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    print(f"tally: the driver (pid {info.get('pid')}) went away before the command ended; see {p.log}",
          file=sys.stderr)
    return 1


def _forwardable(args: list[str]):
    """(paths, config) of the project `args` address, when its command may run in a driver; else None."""
    import warnings

    import click

    from tally import cli
    from tally import config as config_module

    options = args[: args.index("--")] if "--" in args else args
    if any(a in ("--help", "-h", "--version") for a in options):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Click 9 moves protected_args into args
            ctx = cli.cli.make_context("tally", list(args), resilient_parsing=True)
            rest = [*getattr(ctx, "protected_args", []), *ctx.args]
        if not rest or rest[0] in LOCAL_COMMANDS:
            return None
        config = config_module.load(None, **ctx.params)
        return paths(config.warehouse), config
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, UsageError, OSError):
        return None  # the local run reports it


# ---- the driver side ----

class _Sink(io.RawIOBase):
    """The bytes a command writes to stdout or stderr, sent to its client as text."""

    def __init__(self, send, key: str, tty: bool):
        self._send, self._key, self._tty = send, key, tty
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # the client's terminal: progress bars show as they would there
        return self._tty

    def write(self, data) -> int:
        text = self._decoder.decode(bytes(data))
        if text:
            self._send({self._key: text})
        return len(data)


class Driver:
    """The serving loop of `tally driver run`: accepts connections, runs their commands one at a time."""

    def __init__(self, store, p: Paths, idle_s: float | None = None):
        self.store, self.p, self.idle_s = store, p, idle_s
        self.lock = threading.Lock()
        self.busy: list[str] | None = None
        self.served = 0
        self.stopping = threading.Event()
        self.started = time.time()
        self.last = time.monotonic()  # when the last command ended (or the driver began to serve)
        self.listener: socket.socket | None = None

    def idle(self) -> bool:
        return (self.idle_s is not None and not self.lock.locked()
                and time.monotonic() - self.last > self.idle_s)

    def serve(self, warm_up: bool, announce) -> None:
        spark = self.store.spark
        warm_s = 0.0
        if warm_up:
            from tally.spark import representative_workload

            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="tally-warm-up-") as tmp:
                representative_workload(spark, tmp)
            warm_s = time.perf_counter() - t0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.p.socket.unlink()
        self.listener.bind(str(self.p.socket))
        os.chmod(self.p.socket, 0o600)
        self.listener.listen(16)
        self.listener.settimeout(0.5)
        info = {**_identity(self.store.config), "pid": os.getpid(), "started": self.started, "warm_up_s": warm_s,
                "socket": str(self.p.socket), "log": str(self.p.log), "protocol": PROTOCOL}
        tmp = self.p.info.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(self.p.info)
        announce(info)
        self.last = time.monotonic()
        handlers = []
        try:
            while not self.stopping.is_set():
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    if self.idle():
                        print(f"no command for {self.idle_s:.0f} s: stopping", file=sys.__stdout__, flush=True)
                        break
                    continue
                except OSError:
                    break
                t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
                t.start()
                handlers = [h for h in handlers if h.is_alive()] + [t]
        finally:
            self._unpublish()
            for t in handlers:  # the running command ends; those waiting are told to run again
                t.join()

    def stop(self, *_args) -> None:
        self.stopping.set()

    def _unpublish(self) -> None:
        """Gone from the folder first, so that no new client comes while the running command ends."""
        if (read_info(self.p) or {}).get("pid") == os.getpid():
            for path in (self.p.info, self.p.socket):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if self.listener is not None:
            self.listener.close()

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            lock = threading.Lock()
            gone = threading.Event()

            def send(message: dict) -> None:
                if not gone.is_set():
                    try:
                        _send(f, lock, message)
                    except OSError:
                        gone.set()

            line = f.readline()
            try:
                request = json.loads(line)
            except ValueError:
                return send({"error": "not a tally driver request"})
            if request.get("protocol") != PROTOCOL:
                return send({"error": f"protocol {request.get('protocol')} (this driver speaks {PROTOCOL})"})
            op = request.get("op")
            if op == "status":
                return send(self.status())
            if op == "stop":
                self.stop()
                return send({**self.status(), "stopping": True})
            if op == "run":
                return self._run(request, conn, send, gone)
            return send({"error": f"unknown op {op!r}"})

    def status(self) -> dict:
        return {"pid": os.getpid(), "warehouse": self.store.config.warehouse, "master": self.store.config.master,
                "started": self.started, "uptime_s": round(time.time() - self.started, 1), "commands": self.served,
                "busy": self.busy, "idle_timeout_s": self.idle_s, "log": str(self.p.log),
                "compiled_classes": kernels.compiled_classes(self.store.spark)}

    def _run(self, request: dict, conn: socket.socket, send, gone: threading.Event) -> None:
        argv = [str(a) for a in request["argv"]]
        if not self.lock.acquire(blocking=False):
            send({"wait": self.busy or []})
            self.lock.acquire()
        try:
            if self.stopping.is_set():
                send({"err": "tally: the driver stopped before this command's turn; run it again\n"})
                return send({"exit": 1})
            self.busy = argv
            group = f"tally-driver-{os.getpid()}-{self.served}"
            done = threading.Event()
            threading.Thread(target=self._watch, args=(conn, group, gone, done), daemon=True).start()
            t0 = time.perf_counter()
            try:
                code = self._command(argv, request, send, group)
            except OSError as exc:  # the client's folder is gone
                send({"err": f"tally: the driver cannot run a command in {request['cwd']}: {exc}\n"})
                code = 1
            finally:
                done.set()
                self.last = time.monotonic()
            self.served += 1
            send({"exit": code})
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} tally {' '.join(argv)}: exit {code} in "
                  f"{time.perf_counter() - t0:.1f} s{' (the client went away: cancelled)' if gone.is_set() else ''}",
                  file=sys.__stdout__, flush=True)
        finally:
            self.busy = None
            self.lock.release()

    def _watch(self, conn: socket.socket, group: str, gone: threading.Event, done: threading.Event) -> None:
        """The client closing its end (Ctrl-C) cancels the command's jobs, and any it starts after, until it ends."""
        with contextlib.suppress(OSError):
            while not done.is_set() and conn.recv(1):
                pass
        if done.is_set():
            return
        gone.set()
        sc = self.store.spark.sparkContext
        while True:
            sc.cancelJobGroup(group)
            if done.wait(0.5):
                return

    def _command(self, argv: list[str], request: dict, send, group: str) -> int:
        from tally import cli

        tty_out, tty_err = (bool(t) for t in request.get("tty", [False, False]))
        out = io.TextIOWrapper(_Sink(send, "out", tty_out), encoding="utf-8", write_through=True)
        err = io.TextIOWrapper(_Sink(send, "err", tty_err), encoding="utf-8", write_through=True)
        saved_env = {k: v for k, v in os.environ.items() if k.startswith("TALLY_")}
        saved_cwd, jvm_dir = os.getcwd(), None
        sc = self.store.spark.sparkContext
        try:
            for key in saved_env:
                del os.environ[key]
            os.environ.update({k: str(v) for k, v in request.get("env", {}).items() if k.startswith("TALLY_")})
            os.chdir(request["cwd"])
            jvm_dir = _jvm_working_dir(self.store.spark, request["cwd"])
            sc.setJobGroup(group, "tally " + " ".join(argv), interruptOnCancel=True)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    return cli.run(argv)
                except SystemExit as exc:
                    return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
                except BaseException:  # a bug: its traceback goes to the client, as it would to a local stderr
                    traceback.print_exc()
                    return 1
                finally:
                    out.flush()
                    err.flush()
        finally:
            sc._jsc.clearJobGroup()  # PySpark has no clearJobGroup of its own
            if jvm_dir is not None:
                _jvm_working_dir(self.store.spark, jvm_dir)
            os.chdir(saved_cwd)
            for key in [k for k in os.environ if k.startswith("TALLY_")]:
                del os.environ[key]
            os.environ.update(saved_env)


def _jvm_working_dir(spark, folder) -> object:
    """Point the JVM's local file system at `folder` (relative paths Spark reads and writes resolve against it, as
    they would in a process started there; the JVM itself cannot change folder). Returns the previous one."""
    jvm = spark._jvm
    fs = jvm.org.apache.hadoop.fs.FileSystem.getLocal(spark._jsc.hadoopConfiguration())
    previous = fs.getWorkingDirectory()
    fs.setWorkingDirectory(folder if not isinstance(folder, str) else jvm.org.apache.hadoop.fs.Path(folder))
    return previous


def idle_seconds(text: str) -> float | None:
    """An idle timeout ('3h', '30m'; '0' or 'never': none) in seconds."""
    from tally.definitions import parse_duration
    from tally.errors import DefinitionError

    if str(text).strip().lower() in ("0", "never"):
        return None
    try:
        return parse_duration(text, where="--idle-timeout") / 1e6
    except DefinitionError as err:
        raise UsageError(err.message, hint=err.hint) from None


def run(store, *, warm_up: bool = True, idle_timeout: str = IDLE_TIMEOUT, announce=lambda info: None) -> None:
    """Serve this project's commands until `tally driver stop`, SIGTERM, Ctrl-C or `idle_timeout` without a command
    (what `tally driver run` does)."""
    idle_s = idle_seconds(idle_timeout)
    p = paths(store.config.warehouse)
    if ask(p, "status") is not None:
        raise UsageError(f"a driver already runs for {store.config.warehouse} (pid {read_info(p).get('pid')})",
                         hint="tally driver status; tally driver stop")
    store.long_lived = True  # before its session starts: a driver runs call after call
    driver = Driver(store, p, idle_s)
    previous = {s: signal.signal(s, driver.stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        driver.serve(warm_up, announce)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def start(config, args: list[str], *, warm_up: bool = True, idle_timeout: str = IDLE_TIMEOUT,
          timeout: float = 300.0) -> dict:
    """Start `tally ARGS driver run` in the background, its output in the log, and wait until it serves."""
    idle_seconds(idle_timeout)  # a bad value is refused here, not in the background
    p = paths(config.warehouse)
    info = read_info(p)
    if info is not None and ask(p, "status") is not None:
        return {**info, "already": True}
    p.log.parent.mkdir(parents=True, exist_ok=True)
    with open(p.log, "ab") as log:
        command = [sys.executable, "-m", "tally.cli", *args, "driver", "run", "--idle-timeout", idle_timeout,
                   *([] if warm_up else ["--no-warm-up"])]
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "TALLY_DRIVER": "off"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_info(p)
        if info is not None and info.get("pid") == proc.pid:
            return {**info, "already": False}
        if proc.poll() is not None:
            raise UsageError(f"the driver exited with code {proc.returncode} before it served:\n"
                             + _tail(p.log), hint=f"its whole log: {p.log}")
        time.sleep(0.2)
    proc.terminate()
    raise UsageError(f"the driver did not serve within {timeout:.0f} s", hint=f"its log: {p.log}")


def stop(config, timeout: float = 120.0) -> dict | None:
    """Ask the driver to stop after its running command; wait until its process is gone. None: none was running."""
    p = paths(config.warehouse)
    answer = ask(p, "stop")
    if answer is None:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(answer["pid"]):
        time.sleep(0.2)
    if _alive(answer["pid"]):
        raise UsageError(f"the driver (pid {answer['pid']}) has not stopped within {timeout:.0f} s",
                         hint=f"it ends its running command first; its log: {p.log}")
    return answer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie (our own child, not yet reaped) is gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
