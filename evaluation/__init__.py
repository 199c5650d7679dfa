"""The evaluation toolkit: any encoder on the LAReQA sets and on MIRACL, outside the DVC pipeline.

No DVC stage runs this package; it builds on the library of :mod:`pipeline` (the same encoder, index and
scorer as the ``index`` and ``score`` stages) and nothing in :mod:`pipeline` imports it.

* :mod:`evaluation.evaluate`: the command, ``python -m evaluation`` (``hybrid-batch-evaluate``).
* :mod:`evaluation.miracl`: MIRACL's topics, qrels and corpus, checked record by record.
* :mod:`evaluation.ir_metrics`: nDCG@k and recall@k of a top-k run against graded qrels, as trec_eval.
* :mod:`evaluation.shards`: resumable corpus encoding in shards.
"""
