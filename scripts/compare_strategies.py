"""The strategy comparison as DVC experiments: ``python -m experiments``, under its former name.

    python -m scripts.compare_strategies run --grid mlqa2xquad-cpu --seeds 13 14 15
"""
from experiments.cli import main

if __name__ == "__main__":
    main()
