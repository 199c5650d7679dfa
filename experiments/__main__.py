"""``python -m experiments``: the grid command of :mod:`experiments.cli` (run, queue, collect, report)."""
import sys

from .cli import main

sys.argv[0] = "python -m experiments"  # for the usage line
main()
