"""The side process that hosts a run's external trackers (``logger=mlflow``, ``logger=wandb``).

Importing MLflow takes about 1 s of a core and importing its SQL store 0.6 s more (W&B's
client is alike). A run therefore keeps its trackers in a child process, as W&B's own
client talks to its service process: ``engine.run.run`` starts it as the run starts, so
the trackers' imports run on another core while the run prepares its data and model;
the run waits for the tracker runs to be open only before its first step.

The run and the child talk in JSON lines, on the child's stdin and stdout::

    run -> child    {"op": "open", ...}   {"op": "log", ...}   {"op": "finish" | "fail", ...}
    child -> run    {"opened": record} | {"error": line} | {"bug": traceback}
                    {"ended": true}        {"log": [logger, level, message]}  (its log records)

The child imports the trackers' modules (``dlrun.engine.trackers``), never torch or a
task. It runs in a session of its own and ignores Ctrl-C and SIGTERM: the run says how
its tracker runs end (killed on Ctrl-C); when its stdin ends while tracker runs are open
(the run's process died), it ends them killed. The run bounds every wait: a child that
dies or hangs during training costs a warning, never the run.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dlrun.errors import UserError

log = logging.getLogger("dlrun")

# The bounds of the run's waits. Opening includes the imports (seconds on a loaded machine)
# and the store's answer: MLflow retries an unreachable server for minutes, then says why.
OPEN_TIMEOUT_S = 300.0
END_TIMEOUT_S = 600.0  # the run's files sent (checkpoints too with log_checkpoints)
EXIT_TIMEOUT_S = 60.0  # the child's own exit after its runs ended (W&B's teardown)


class TrackerProcess:
    """The run's side of the child: ``send`` never waits; ``request`` waits, bounded.

    Two threads move the lines (a child that stops reading never blocks the run); the
    child's replies are handled in the run's thread, at its next ``send`` or ``request``.
    """

    def __init__(self, names: list[str]):
        self.names = names
        self.proc = subprocess.Popen(
            self.command(names),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_env(),
            encoding="utf-8",
            start_new_session=True,  # a terminal's Ctrl-C reaches the run, not the child
        )
        self.hosting = False  # whether the child was asked to open tracker runs
        self.lost: str | None = None  # why the child no longer answers
        self._outbox: queue.Queue[str | None] = queue.Queue()
        self._inbox: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._write, name="dlrun-trackers-out", daemon=True).start()
        threading.Thread(target=self._read, name="dlrun-trackers-in", daemon=True).start()

    @staticmethod
    def command(names: list[str]) -> list[str]:
        """The child's command line: this module, run by this Python."""
        return [sys.executable, "-m", __name__, *names]

    def _write(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        while (line := self._outbox.get()) is not None:
            try:
                stdin.write(line)
                stdin.flush()
            except (OSError, ValueError):  # the child is gone: its stdout's end says so
                break
        with contextlib.suppress(OSError, ValueError):
            stdin.close()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in stdout:
                with contextlib.suppress(ValueError):
                    self._inbox.put(json.loads(line))
        self._inbox.put({"eof": True})
        with contextlib.suppress(OSError):
            stdout.close()

    def _post(self, op: str, fields: dict[str, Any]) -> None:
        if self.lost is None:
            self._outbox.put(json.dumps({"op": op, **fields}, default=str) + "\n")

    def send(self, op: str, **fields: Any) -> None:
        """Queue a message for the child (never waits) and take the replies that came."""
        self._post(op, fields)
        while True:
            try:
                self._take(self._inbox.get_nowait())
            except queue.Empty:
                return

    def request(self, op: str, wants: tuple[str, ...], timeout: float, **fields: Any):
        """Send ``op`` and wait, at most ``timeout`` seconds, for the reply that holds one
        of ``wants``. None when the child ended or did not answer in time (``lost`` says
        which; a child that did not answer is killed)."""
        self._post(op, fields)
        deadline = time.monotonic() + timeout
        while self.lost is None:
            try:
                reply = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.lost = f"did not answer within {timeout:g} s"
                self.proc.kill()
                return None
            self._take(reply)
            if any(key in reply for key in wants):
                return reply
        return None

    def _take(self, reply: dict) -> None:
        if "log" in reply:  # the child's log records, in the run's log
            name, level, message = reply["log"]
            logging.getLogger(str(name)).log(int(level), "%s", message)
        elif "eof" in reply and self.lost is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            self.lost = f"ended (exit code {self.proc.returncode})"

    def open(self, data: dict, run_dir: Path, previous: dict, sweep: Path | None) -> dict:
        """Open the tracker runs of the run ``data`` in ``run_dir`` (continuing
        ``previous``, under the sweep ``sweep``'s parent): their record for
        ``trackers.json``. A tracker that cannot start, or a child that ends or does not
        answer, is the user's one-line error."""
        self.hosting = True
        fields = {"run_dir": str(run_dir), "previous": previous, "sweep": sweep}
        reply = self.request(
            "open", ("opened", "error", "bug"), OPEN_TIMEOUT_S, data=data, **fields
        )
        if reply is None:
            raise UserError(
                f"logger={_listed(self.names)}: the trackers' process {self.lost} before its "
                "tracker runs were open; check that the tracking store answers, or choose "
                "logger=none"
            )
        if "error" in reply:
            raise UserError(reply["error"])
        if "bug" in reply:
            raise RuntimeError(f"the trackers' process failed to open them:\n{reply['bug']}")
        return reply["opened"]

    def close(self) -> None:
        """End the child: after its tracker runs, its own exit is awaited (bounded; W&B's
        teardown); a child that opened none is only importing, and is stopped at once."""
        self._outbox.put(None)  # its stdin ends: it ends what is still open, then exits
        if self.hosting and self.lost is None:
            try:
                self.proc.wait(timeout=EXIT_TIMEOUT_S)
                return
            except subprocess.TimeoutExpired:
                log.warning(
                    "dlrun: %s: the trackers' process did not exit within %g s; stopped",
                    _listed(self.names),
                    EXIT_TIMEOUT_S,
                )
        self.proc.kill()
        self.proc.wait()


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"[{','.join(names)}]"


def _env() -> dict[str, str]:
    """This environment, with the folder this process imports dlrun from first on the
    child's path when that is not a site folder (a checkout's ``src/``): the child runs
    the run's own code."""
    import site

    import dlrun

    root = str(Path(dlrun.__file__).resolve().parents[1])
    sites = {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    env = dict(os.environ)
    if root not in sites:
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


# -- the child -------------------------------------------------------------------------------


class _Forward(logging.Handler):
    """The child's log records (dlrun's, the trackers' warnings), sent for the run to log
    in its own log, as the trackers' records were when they ran in the run's process."""

    def __init__(self, reply: Callable[[dict], None]):
        super().__init__(logging.INFO)
        self.reply = reply

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.reply({"log": [record.name, record.levelno, record.getMessage()]})


def serve(names: list[str], lines: Iterable[str], reply: Callable[[dict], None]) -> None:
    """The child's work: import the trackers ``names`` (before any message: that is the
    time the run saves), then follow the run's messages until ``lines`` end."""
    from dlrun.engine import trackers

    handler = _Forward(reply)
    root, dlrun_log = logging.getLogger(), logging.getLogger("dlrun")
    saved = root.handlers, root.level, dlrun_log.level
    root.handlers = [handler]
    root.setLevel(logging.WARNING)  # the libraries' warnings; dlrun's news too
    dlrun_log.setLevel(logging.INFO)
    runs = None
    try:
        trackers.warm(names)
        for line in lines:
            message = json.loads(line)
            op = message.pop("op")
            if op == "open":
                if runs is not None:  # not ended by the run (it never does that)
                    runs.fail("failed")
                runs = None
                try:
                    runs = trackers.TrackerRuns(**message)
                    reply({"opened": runs.record})
                except UserError as exc:
                    reply({"error": str(exc)})
                except Exception:
                    reply({"bug": traceback.format_exc()})
            elif runs is not None and op == "log":
                runs.log(message["values"], message["step"])
            elif op in ("finish", "fail"):
                if runs is not None:
                    getattr(runs, op)(**message)
                runs = None
                reply({"ended": True})
        if runs is not None:  # the run's process ended without saying how: killed
            runs.fail("interrupted")
    finally:
        root.handlers = saved[0]
        root.setLevel(saved[1])
        dlrun_log.setLevel(saved[2])


def main() -> None:
    """``python -m dlrun.engine.trackers_process NAME...``: the child, as the run starts it."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # the run decides how its tracker runs end
        signal.signal(sig, signal.SIG_IGN)
    # Replies on a copy of stdout; what the libraries print goes to stderr.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def reply(message: dict) -> None:
        with lock, contextlib.suppress(OSError, ValueError):  # the run may have gone
            replies.write(json.dumps(message, default=str) + "\n")
            replies.flush()

    serve(sys.argv[1:], sys.stdin, reply)
    # As dlrun's own main: frozen objects spare the exit a collection over MLflow's
    # modules (0.45 s of the run's wait for this process to end).
    gc.freeze()


if __name__ == "__main__":
    main()
