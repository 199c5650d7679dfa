"""What a user sees of a run: one line for an expected error, progress that suits where output goes.

- :func:`run` wraps a stage's (or command's) ``main``: an expected error (:class:`~pipeline.errors.PipelineError`:
  bad input data, a missing or unreachable asset such as a hub model offline, invalid params, a batch or
  dev set the data cannot give) ends the process with one line, ``<name>: error: <message>``, and exit
  status 1, instead of a traceback; an error that names where it comes from (``where``: invalid params are
  ``params.yaml``, a YAML problem ``params.yaml:12:3``) is ``<where>: error: <message>`` whichever stage
  read the file. ``--verbose`` (anywhere in the arguments) or ``PIPELINE_VERBOSE=1``
  (e.g. ``PIPELINE_VERBOSE=1 dvc repro``) re-raises it with the traceback. Other exceptions are bugs
  and keep their traceback.
- :func:`progress` counts work done, on stdout (the stream ``dvc repro > log`` keeps): a tqdm bar on a
  terminal; when output goes to a pipe or a file (CI, ``dvc queue`` logs, ``nohup``) one plain line at
  each quarter, e.g. ``train: 15/60 steps (25%), loss 0.41, 52 s``, instead of carriage-return redraws.
  Progress goes to the console only, never into an output file. :func:`run` also turns the Hugging Face
  libraries' bars off there.
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


def one_line(err: BaseException | str) -> str:
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
        # an error that names its own origin (params.yaml, params.yaml:12:3) is reported under it, not under
        # the stage that happened to read the file
        where = getattr(err, "where", None)
        origin, message = (where, getattr(err, "detail", err)) if where else (name, err)
        print(f"{origin}: error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(1) from None


class LogProgress:
    """tqdm's ``update`` / ``set_postfix_str`` / context-manager interface, reporting by one plain line on
    ``stream`` (default: stdout at the time of the line) at each ``step`` share of ``total``:
    ``<desc>: <done>/<total> <unit> (<share>%)[, <postfix>], <seconds> s``. A loop that ends before its
    total (an early stop) gets a last line on a clean exit."""

    def __init__(self, total: int, desc: str, unit: str, step: float = 0.25, stream=None):
        self.total, self.desc, self.unit, self.step, self.stream = total, desc, unit, step, stream
        self.done, self.next_share, self.t0 = 0, step, time.perf_counter()
        self.postfix, self.reported = "", 0

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Extra text for the next line (tqdm's name): a loss, a score."""
        self.postfix = s

    def update(self, n: int = 1) -> None:
        self.done += n
        share = self.done / self.total if self.total else 1.0
        if share + 1e-12 >= self.next_share:
            self._line(share)
            while self.next_share <= share + 1e-12:
                self.next_share += self.step

    def _line(self, share: float) -> None:
        postfix = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({round(100 * share)}%){postfix}, "
              f"{time.perf_counter() - self.t0:.0f} s", file=self.stream or sys.stdout, flush=True)
        self.reported = self.done

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None and self.done != self.reported:
            self._line(self.done / self.total if self.total else 1.0)
        return None


class _Silent(LogProgress):
    def update(self, n: int = 1) -> None:
        self.done += n

    def __exit__(self, *exc) -> None:
        return None


def progress(total: int, desc: str, unit: str, enabled: bool = True, stream=None):
    """A progress counter over ``total`` units on ``stream`` (default stdout, the stream a user reading
    ``dvc repro``'s output sees, redirected or not): silent when not ``enabled``; a tqdm bar when ``stream``
    is a terminal; else a :class:`LogProgress` (a line per quarter)."""
    if not enabled:
        return _Silent(total, desc, unit)
    if getattr(stream or sys.stdout, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, mininterval=2, file=stream or sys.stdout)
    return LogProgress(total, desc, unit, stream=stream)
