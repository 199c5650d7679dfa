"""What a user sees of a run: one line for an expected error, progress that suits where output goes.

- :func:`run` wraps a stage's (or command's) ``main``: an expected error (:class:`~pipeline.errors.PipelineError`:
  bad input data, a missing or unreachable asset such as a hub model offline, invalid params, a batch or
  dev set the data cannot give) ends the process with one line, ``<name>: error: <message>``, and exit
  status 1, instead of a traceback. ``--verbose`` (anywhere in the arguments) or ``PIPELINE_VERBOSE=1``
  (e.g. ``PIPELINE_VERBOSE=1 dvc repro``) re-raises it with the traceback. Other exceptions are bugs
  and keep their traceback.
- :func:`progress` counts work done: a tqdm bar on a terminal; when output goes to a pipe or a file
  (CI, ``dvc queue`` logs, ``nohup``) a plain log line at each quarter instead of carriage-return
  redraws. :func:`run` also turns the Hugging Face libraries' bars off there.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from .errors import PipelineError

logger = logging.getLogger(__name__)

VERBOSE_ENV = "PIPELINE_VERBOSE"


def verbose_requested(argv: list[str]) -> bool:
    return "--verbose" in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a multi-line message, e.g. several invalid params, joined by ';')."""
    return "; ".join(part.strip() for part in str(err).splitlines() if part.strip())


def run(main: Callable[[list[str]], object], name: str, argv: list[str] | None = None) -> None:
    """Call ``main(argv)`` (``argv`` without ``--verbose``) with logging on; an expected error exits 1 with
    one line on stderr (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = verbose_requested(argv)
    argv = [a for a in argv if a != "--verbose"]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    try:
        main(argv)
    except PipelineError as err:
        if verbose:
            raise
        print(f"{name}: error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(1) from None


class LogProgress:
    """tqdm's ``update`` / context-manager interface, reporting by log lines at each ``step`` share."""

    def __init__(self, total: int, desc: str, unit: str, step: float = 0.25):
        self.total, self.desc, self.unit, self.step = total, desc, unit, step
        self.done, self.next_share, self.t0 = 0, step, time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        share = self.done / self.total if self.total else 1.0
        if share + 1e-12 >= self.next_share:
            logger.info("%s: %d/%d %s (%d%%, %.0f s)", self.desc, self.done, self.total, self.unit,
                        round(100 * share), time.perf_counter() - self.t0)
            while self.next_share <= share + 1e-12:
                self.next_share += self.step

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None


class _Silent(LogProgress):
    def update(self, n: int = 1) -> None:
        self.done += n


def progress(total: int, desc: str, unit: str, enabled: bool = True, stream=None):
    """A progress counter over ``total`` units: silent when not ``enabled``; a tqdm bar when ``stream``
    (default stderr) is a terminal; else a :class:`LogProgress` (a log line per quarter)."""
    if not enabled:
        return _Silent(total, desc, unit)
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, mininterval=2, file=stream)
    return LogProgress(total, desc, unit)
