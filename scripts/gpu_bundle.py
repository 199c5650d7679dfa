"""A GPU grid carried to a lent GPU machine: ``python -m experiments.gpu``, under its former name.

    python -m scripts.gpu_bundle prepare --grids mlqa2xquad-gpu
"""
from experiments.gpu import main

if __name__ == "__main__":
    main()
