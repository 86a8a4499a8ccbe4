"""math-verify's judgement of two answers, bounded in time in whichever thread calls it.

Before judging, a free ``i`` in either parse becomes the imaginary unit and every other free
symbol a real symbol of its name (see `_unify_symbols`).

math-verify's own timeout uses ``signal.alarm``, which raises ValueError outside the main thread
and has whole-second resolution, so it is switched off and the sympy step is bounded here: in
the main thread with a ``SIGALRM`` interval timer (a timer someone else armed is restored
afterwards); in any other thread in a few worker processes that load this file alone and answer
over a pipe. A worker bounds itself with the same timer and is killed if it overruns anyway (C
code that never checks for signals).
"""

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

import sympy
from math_verify import parse, verify

_GRACE_S = 1.0  # extra wait before killing a worker whose own timer failed to stop it
_STARTUP_S = 60.0  # a cold worker imports sympy, which takes seconds on a loaded machine
_WORKER_MEMORY = 2 << 30  # bytes of address space a worker may hold


def _sympy_equal(pred: str, gold: str) -> bool:
    """math-verify's judgement, unbounded: callers bound it."""
    gold_parsed = _unify_symbols(parse(f"${gold}$", parsing_timeout=None))
    pred_parsed = _unify_symbols(parse(f"${pred}$", parsing_timeout=None))
    return bool(gold_parsed and pred_parsed) and verify(
        gold_parsed, pred_parsed, timeout_seconds=None
    )


def _unify_symbols(parsed: list) -> list:
    """The parses with a free ``i`` as the imaginary unit and one symbol per name.

    latex2sympy2_extended reads ``i`` as a symbol, with assumptions that depend on the context
    (``3i`` gets a real one, a lone ``i`` another), so ``i^2`` is not -1 and ``x`` in ``x=i`` is
    not the ``x`` of ``2x``. Every other free symbol becomes a real symbol of its name.
    """
    unified = []
    for element in parsed:
        rule = {}
        for symbol in getattr(element, "free_symbols", ()):
            if type(symbol) is sympy.Symbol:
                name = symbol.name
                new = sympy.I if name == "i" else sympy.Symbol(name, real=True)
                if new != symbol:
                    rule[symbol] = new
        if rule:
            # Unevaluated: rebuilt with evaluation, Eq(x, Interval(-2, 7)) would become False.
            with sympy.evaluate(False):
                element = element.xreplace(rule)
        unified.append(element)
    return unified


def sympy_equal(pred: str, gold: str, timeout_s: float) -> bool:
    """math-verify's verdict on `pred` against `gold`, or False after `timeout_s` seconds."""
    if threading.current_thread() is threading.main_thread():
        try:
            return _with_alarm(pred, gold, timeout_s)
        except ValueError:
            pass  # signals unavailable here (an embedded interpreter): use a worker
    return _POOL.run(pred, gold, timeout_s)


class _Timeout(BaseException):
    """Raised by SIGALRM; a BaseException so that `except Exception` in sympy cannot swallow it."""


def _raise_timeout(signum: int, frame: object) -> None:
    raise _Timeout


def _with_alarm(pred: str, gold: str, timeout_s: float) -> bool:
    """_sympy_equal stopped after `timeout_s` by SIGALRM; main thread only."""
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    start = time.monotonic()
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        try:
            return _sympy_equal(pred, gold)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return False
    finally:
        signal.signal(signal.SIGALRM, previous)
        if old_delay:
            left = max(old_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)


# A worker runs `python -c _BOOT path/to/sympy_timeout.py`: loading this file by path, rather than
# importing tts.verifiers, keeps the rest of the package (and whatever it imports) out of it.
_BOOT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("tts_equal_worker", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module._serve()
"""


def _serve() -> None:
    """Worker loop: one JSON [pred, gold, timeout_s] per line in, b"1" or b"0" per line out."""
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; EOF stops us
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard == resource.RLIM_INFINITY or hard > _WORKER_MEMORY:
        resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY, hard))
    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        pred, gold, timeout_s = json.loads(line)
        try:
            verdict = _with_alarm(pred, gold, timeout_s)
        except Exception:  # MemoryError included: the answer is then "not shown equal"
            verdict = False
        out.write(b"1\n" if verdict else b"0\n")
        out.flush()


class _Worker:
    """One worker process and its pipes."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        if self._read_line(_STARTUP_S) != b"ready":
            self.close()
            raise RuntimeError("the math_equal worker process did not start")

    def ask(self, pred: str, gold: str, timeout_s: float) -> bool | None:
        """The worker's verdict, or None if it overran or died (then it must be closed)."""
        try:
            self._proc.stdin.write(json.dumps([pred, gold, timeout_s]).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            return None
        line = self._read_line(timeout_s + _GRACE_S)
        return None if line is None else line == b"1"

    def _read_line(self, timeout_s: float) -> bytes | None:
        # os.read on the raw fd: a buffered reader could hold bytes that select cannot see.
        deadline = time.monotonic() + timeout_s
        fd = self._proc.stdout.fileno()
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 64)
            if not chunk:
                return None
            data += chunk
        return data.strip()

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()


class _WorkerPool:
    """Workers for sympy calls made outside the main thread, where SIGALRM cannot reach.

    A worker is checked out for one call, so up to `size` threads are served in parallel and
    the rest wait; a worker that overruns is killed, and a new one starts on demand.
    """

    def __init__(self, size: int) -> None:
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def run(self, pred: str, gold: str, timeout_s: float) -> bool:
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                worker = _Worker()
            verdict = worker.ask(pred, gold, timeout_s)
            if verdict is None:
                worker.close()
                return False
            with self._lock:
                self._idle.append(worker)
            return verdict


_POOL = _WorkerPool(size=min(4, os.cpu_count() or 1))


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeout is off; here that is by design (see module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())
