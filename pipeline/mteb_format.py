"""LAReQA results (the score stage's ``metrics/<dataset>.json``) in MTEB's result layout.

:func:`lareqa_mteb` is pure: the same dict that ``evaluation.evaluate`` writes as ``mteb.json`` for MIRACL
(``dataset_revision``, ``task_name``, ``mteb_version``, ``scores``, ``evaluation_time``,
``kg_co2_emissions``), with one ``scores`` entry per LAReQA setting (``hf_subset`` ``mono``, ``cross``,
``multi``): ``map`` (the main score), ``recall_at_<k>``, ``rank_distance``, each also ``_seen`` /
``_unseen`` where the metrics have them. MTEB has no LAReQA task, so the task is named
``LAReQA-<dataset>`` (MTEB's own XQuAD and MLQA retrieval tasks score other pools).
"""
from __future__ import annotations

from .metrics import metric_source

SETTINGS = ("mono", "cross", "multi")
# ISO 639-1 -> MTEB's ISO 639-3 + ISO 15924 codes: XQuAD-R's and MLQA-R's languages
MTEB_LANGUAGES = {
    "ar": "ara-Arab", "de": "deu-Latn", "el": "ell-Grek", "en": "eng-Latn", "es": "spa-Latn", "hi": "hin-Deva",
    "ru": "rus-Cyrl", "th": "tha-Thai", "tr": "tur-Latn", "vi": "vie-Latn", "zh": "zho-Hans",
}
TASK_NAMES = {"xquad-r": "LAReQA-XQuAD-R", "mlqa-r": "LAReQA-MLQA-R"}


def _mteb_metric(column: str) -> str:
    """A per-query column of :func:`pipeline.metrics.metric_source` as MTEB names it."""
    if column == "ap":
        return "map"
    if column.startswith("ap@"):
        return f"map_at_{column[3:]}"
    if column.startswith("r@"):
        return f"recall_at_{column[2:]}"
    return column  # rank_distance


def lareqa_mteb(metrics: dict, dataset: str, languages: list[str] | None = None, split: str = "test",
                revision: str = "local", evaluation_time: float | None = None) -> dict:
    """The score stage's metrics dict of ``dataset`` (keys ``{mono|cross|multi}_{map|mapK|rK|rank_distance}``
    with optional ``_seen`` / ``_unseen``; other keys such as ``queries`` are left out) in MTEB's layout.
    ``languages``: the dataset's ISO 639-1 codes (params ``datasets.<name>.languages``), listed in each entry."""
    codes = []
    for lang in languages or []:
        if lang not in MTEB_LANGUAGES:
            raise ValueError(f"language {lang!r} has no MTEB code here; known: {sorted(MTEB_LANGUAGES)}")
        codes.append(MTEB_LANGUAGES[lang])
    entries = {s: {} for s in SETTINGS}
    for key, value in metrics.items():
        try:
            setting, column, group = metric_source(key)
        except ValueError:
            continue  # a count (queries, pool, languages), not a score
        entries[setting][_mteb_metric(column) + (f"_{group}" if group else "")] = value
    scores = []
    for setting in SETTINGS:
        values = entries[setting]
        if not values:
            continue
        if "map" not in values:
            raise ValueError(f"{dataset}: setting {setting!r} has no mAP ({setting}_map) to be the main score")
        scores.append({"hf_subset": setting, "languages": codes, **dict(sorted(values.items())),
                       "main_score": values["map"]})
    if not scores:
        raise ValueError(f"{dataset}: no mAP of any setting in the metrics ({sorted(metrics)})")
    return {
        "dataset_revision": revision, "task_name": TASK_NAMES.get(dataset, f"LAReQA-{dataset}"),
        "mteb_version": "n/a: written by pipeline.mteb_format in MTEB's result layout",
        "scores": {split: scores}, "evaluation_time": evaluation_time, "kg_co2_emissions": None,
    }
