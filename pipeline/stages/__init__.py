"""The DVC stages, one module each, run as ``python -m pipeline.stages.<name>``.

Importing this package pins the numerical libraries' arithmetic to params.yaml ``reproducibility``
(:mod:`pipeline.reproducibility`) before any stage module loads torch, numpy, ctranslate2 or faiss.
"""
from ..reproducibility import pin_from_params

REPRODUCIBILITY = pin_from_params()
