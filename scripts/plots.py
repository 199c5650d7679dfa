"""Plots of the workspace or of DVC experiments as PNG, offline: ``python -m experiments.plots``, under its
former name.

    python -m scripts.plots --out plots
"""
from experiments.plots import main

if __name__ == "__main__":
    main()
