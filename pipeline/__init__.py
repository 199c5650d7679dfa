"""Multilingual dense retrieval: the hybrid-batch training pipeline (arXiv 2408.10536) as DVC stages.

Library modules (one concept each) live here; the thin DVC stage entry points live in
``pipeline/stages/``. See README.md for the tree.
"""
