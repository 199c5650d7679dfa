"""``python -m evaluation``: evaluate any encoder in one command (:mod:`evaluation.evaluate`, see ``--help``)."""
from pipeline import console

from .evaluate import main

if __name__ == "__main__":
    console.run(main, "evaluate")  # bad or unreachable inputs: one line, no traceback (--verbose for it)
