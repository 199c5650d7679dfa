"""Training batches with the paper's language mixing: X-X, X-Y and hybrid (arXiv 2408.10536).

The input is the filtered pair table (one row per ``(pair_id, lang)``; rows sharing a ``pair_id``
are translations of one QA pair). A batch is a list of (query, passage) rows whose other rows are
the in-batch negatives of the loss, so:

* **X-X** (:func:`xx_batch`): one language per batch, query and passage both in it. The language is
  drawn per batch, uniformly over the training languages (``language_weights: uniform``) or in
  proportion to the pairs each language has (``proportional``).
* **X-Y** (:func:`xy_batch`): every row pairs a query in one language with the passage of the same
  ``pair_id`` in another (an ordered language pair drawn uniformly among the languages that pair
  exists in), so languages vary inside the batch. Only pairs present in two or more languages qualify.
* **hybrid** (:func:`hybrid_batches`): each batch is X-X with probability ``alpha``, else X-Y
  (``mode: xx`` is ``alpha = 1``, ``mode: xy`` is ``alpha = 0``).

No batch holds two rows of one ``pair_id`` or two identical query or passage texts (a
duplicate would be a false negative), as in sentence-transformers' ``NoDuplicatesBatchSampler``.
Pairs are drawn without replacement: each kind of batch (X-X per language, X-Y) walks through its own
shuffled list of candidates and reshuffles when it runs out, so every pair is used before any repeats.
A candidate skipped because its text clashes with the batch is kept for the next batch. When fewer
distinct candidates exist than ``batch_size`` (a rare language, a small validation split) the batch
is *short*: it holds every distinct candidate (at least two).

Everything random comes from one ``numpy.random.Generator(PCG64(...))`` per output (see
:func:`generator`), consumed in a fixed order, so equal inputs and seed give identical batches.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import PipelineError

BATCH_COLUMNS = ["batch_id", "position", "kind", "pair_id", "query_lang", "passage_lang", "query", "passage"]
REQUIRED_COLUMNS = ["pair_id", "lang", "question", "passage"]

# independent random streams drawn from the one seed (stream 0 was the old train/validation split,
# now made once by pipeline.devset with its own seed)
TRAIN_STREAM, VAL_STREAM = 1, 2


class BatchingError(PipelineError, ValueError):
    """The pair table cannot give the batches asked for; the message says why."""


def generator(seed: int, stream: int = 0) -> np.random.Generator:
    """The random generator of ``stream`` (split, train or validation batches) for ``seed``."""
    return np.random.Generator(np.random.PCG64([seed, stream]))


def check_pairs(pairs: pd.DataFrame) -> None:
    """Raise :class:`BatchingError` unless ``pairs`` has the columns and one row per (pair_id, lang)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in pairs.columns]
    if missing:
        raise BatchingError(f"pair table lacks column(s) {missing}; it has {list(pairs.columns)}")
    dup = pairs.duplicated(["pair_id", "lang"])
    if dup.any():
        row = pairs.loc[dup].iloc[0]
        raise BatchingError(f"pair_id {row['pair_id']!r} has two rows in language {row['lang']!r}")
    empty = (pairs["question"].str.len() == 0) | (pairs["passage"].str.len() == 0)
    if empty.any():
        raise BatchingError(f"pair_id {pairs.loc[empty, 'pair_id'].iloc[0]!r} has an empty question or passage")


class _Cycle:
    """Candidates in shuffled order, reshuffled when used up; skipped ones can be put back in front."""

    def __init__(self, items: list, rng: np.random.Generator):
        self.items, self.rng, self.queue = items, rng, deque()

    def __len__(self) -> int:
        return len(self.items)

    def next(self):
        if not self.queue:
            self.queue.extend(self.items[i] for i in self.rng.permutation(len(self.items)))
        return self.queue.popleft()

    def put_back(self, items: list) -> None:
        self.queue.extendleft(reversed(items))


@dataclass
class PairPool:
    """The pair table indexed for sampling: rows per language, languages per pair_id.

    Build it with :meth:`from_pairs`; it keeps the per-kind cursors (:class:`_Cycle`), so one pool
    serves one sequence of batches.
    """

    rows: pd.DataFrame
    languages: list[str]
    rng: np.random.Generator
    by_lang: dict[str, list[int]] = field(default_factory=dict)
    by_pair: dict[object, dict[str, int]] = field(default_factory=dict)
    columns: dict[str, list] = field(default_factory=dict)
    _cycles: dict[str, _Cycle] = field(default_factory=dict)

    @classmethod
    def from_pairs(cls, pairs: pd.DataFrame, languages: list[str], rng: np.random.Generator) -> PairPool:
        check_pairs(pairs)
        rows = pairs.loc[pairs["lang"].isin(languages)].sort_values(["pair_id", "lang"], kind="stable")
        rows = rows.reset_index(drop=True)
        pool = cls(rows, list(languages), rng)
        pool.columns = {c: rows[c].tolist() for c in ["pair_id", "lang", "question", "passage"]}
        for i, (pid, lang) in enumerate(zip(rows["pair_id"].tolist(), rows["lang"].tolist(), strict=True)):
            pool.by_lang.setdefault(lang, []).append(i)
            pool.by_pair.setdefault(pid, {})[lang] = i
        return pool

    @property
    def xx_languages(self) -> list[str]:
        """Training languages with at least two pairs (enough for one X-X batch), in params order."""
        return [lang for lang in self.languages if len(self.by_lang.get(lang, [])) >= 2]

    @property
    def xy_pair_ids(self) -> list:
        """pair_ids present in two or more training languages, sorted."""
        return sorted(pid for pid, langs in self.by_pair.items() if len(langs) >= 2)

    def language_weights(self, how: str) -> np.ndarray:
        """Probability of each of :attr:`xx_languages` being an X-X batch's language."""
        langs = self.xx_languages
        if how == "uniform":
            w = np.ones(len(langs))
        elif how == "proportional":
            w = np.array([len(self.by_lang[lang]) for lang in langs], dtype=float)
        else:
            raise ValueError(f"language_weights must be 'uniform' or 'proportional', got {how!r}")
        return w / w.sum()

    def cycle(self, key: str, items) -> _Cycle:
        if key not in self._cycles:
            self._cycles[key] = _Cycle(list(items), self.rng)
        return self._cycles[key]


class _Batch:
    """Rows of one batch being filled, with the texts and pair_ids already in it."""

    def __init__(self):
        self.rows: list[dict] = []
        self.pair_ids, self.queries, self.passages = set(), set(), set()

    def clash(self, pair_id, query: str, passage: str) -> str | None:
        if pair_id in self.pair_ids:
            return "pair_id"
        if query in self.queries or passage in self.passages:
            return "text"
        return None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.pair_ids.add(row["pair_id"])
        self.queries.add(row["query"])
        self.passages.add(row["passage"])


def _fill(pool: PairPool, cycle: _Cycle, size: int, make_row) -> list[dict]:
    """Draw from ``cycle`` until the batch has ``size`` rows or no candidate left fits.

    The queue never holds more than two cycles' worth, so ``3 * len(cycle)`` draws in a row without
    a fit have tried every candidate.
    """
    batch, skipped, misses = _Batch(), [], 0
    while len(batch.rows) < size and misses < 3 * len(cycle):
        row = make_row(cycle.next())
        why = batch.clash(row["pair_id"], row["query"], row["passage"])
        if why is None:
            batch.add(row)
            misses = 0
            continue
        misses += 1
        if why == "text":  # not used yet: keep it for the next batch
            skipped.append(row["_item"])
    cycle.put_back(list(dict.fromkeys(skipped)))
    if len(batch.rows) < 2:
        raise BatchingError(f"cannot build a batch of two distinct pairs from {len(cycle)} candidate(s)")
    return batch.rows


def _row(pool: PairPool, item, q_row: int, p_row: int) -> dict:
    c = pool.columns
    out = {"pair_id": c["pair_id"][q_row], "query_lang": c["lang"][q_row], "passage_lang": c["lang"][p_row],
           "query": c["question"][q_row], "passage": c["passage"][p_row], "_item": item}
    return out


def xx_batch(pool: PairPool, lang: str, size: int) -> list[dict]:
    """One X-X batch in ``lang``: up to ``size`` rows, query and passage both in ``lang``."""
    if lang not in pool.by_lang:
        raise BatchingError(f"no pairs in language {lang!r}")
    cycle = pool.cycle(f"xx:{lang}", pool.by_lang[lang])
    return _fill(pool, cycle, size, lambda i: _row(pool, i, i, i))


def xy_batch(pool: PairPool, size: int) -> list[dict]:
    """One X-Y batch: up to ``size`` rows, each with query language != passage language."""
    if "xy" not in pool._cycles:
        ids = pool.xy_pair_ids
        if len(ids) < 2:
            raise BatchingError("X-Y batches need pair_ids present in two or more training languages; "
                                f"{len(ids)} found")
        pool.cycle("xy", ids)
    cycle = pool._cycles["xy"]

    def make(pid):
        langs = pool.by_pair[pid]
        names = [lang for lang in pool.languages if lang in langs]
        q, p = pool.rng.choice(len(names), size=2, replace=False)
        return _row(pool, pid, langs[names[q]], langs[names[p]])

    return _fill(pool, cycle, size, make)


def mode_alpha(mode: str, alpha: float) -> float:
    """Probability of an X-X batch for ``sampling.mode``: 1 for xx, 0 for xy, ``alpha`` for hybrid."""
    if mode == "xx":
        return 1.0
    if mode == "xy":
        return 0.0
    if mode == "hybrid":
        return float(alpha)
    raise ValueError(f"mode must be 'xx', 'xy' or 'hybrid', got {mode!r}")


def hybrid_batches(pairs: pd.DataFrame, languages: list[str], n_batches: int, batch_size: int,
                   alpha: float, rng: np.random.Generator, language_weights: str = "uniform",
                   exact_share: bool = False) -> pd.DataFrame:
    """``n_batches`` batches, each X-X with probability ``alpha``, else X-Y, in training order.

    With ``exact_share`` exactly ``round(alpha * n_batches)`` batches are X-X, in random order (used
    for the few validation batches, so that their mix does not depend on luck).
    Returns a DataFrame with :data:`BATCH_COLUMNS`.
    """
    pool = PairPool.from_pairs(pairs, languages, rng)
    xx_langs = pool.xx_languages
    if alpha > 0 and not xx_langs:
        raise BatchingError(f"X-X batches need a training language ({languages}) with two or more pairs")
    weights = pool.language_weights(language_weights) if xx_langs else None
    if exact_share:
        n_xx = int(round(alpha * n_batches))
        planned = rng.permutation(np.arange(n_batches) < n_xx).tolist()
    out: list[dict] = []
    for b in range(n_batches):
        if exact_share:
            is_xx = planned[b]
        else:
            is_xx = alpha >= 1 or (alpha > 0 and rng.random() < alpha)
        if is_xx:
            lang = xx_langs[rng.choice(len(xx_langs), p=weights)]
            rows = xx_batch(pool, lang, batch_size)
        else:
            rows = xy_batch(pool, batch_size)
        for pos, row in enumerate(rows):
            row.pop("_item")
            out.append({"batch_id": b, "position": pos, "kind": "xx" if is_xx else "xy", **row})
    df = pd.DataFrame(out, columns=BATCH_COLUMNS)
    return df.astype({"batch_id": "int64", "position": "int64"})


def validation_batch_count(val: pd.DataFrame, batch_size: int) -> int:
    """Default number of validation batches: about one use of every held-out row."""
    return max(1, math.ceil(len(val) / batch_size))


def check_languages(train: pd.DataFrame, languages: list[str]) -> None:
    """Every training language needs two or more training pairs (one X-X batch); a language of
    ``languages`` without them is an error naming it, never silently left out of the batches."""
    counts = train["lang"].value_counts()
    short = {lang: int(counts.get(lang, 0)) for lang in languages if counts.get(lang, 0) < 2}
    if short:
        listed = ", ".join(f"{lang!r} has {n}" for lang, n in short.items())
        raise BatchingError(f"languages: {listed} training pairs (2 or more needed); give the language a source "
                            "(gather.sources) or a translation target (translate.targets), or remove it from "
                            "languages")


def with_hard_negatives(batches: pd.DataFrame, picker) -> tuple[pd.DataFrame, int]:
    """``batches`` plus ``hard_negatives`` and ``negative_langs`` (a list per row) chosen by ``picker``
    (:class:`pipeline.mining.NegativePicker`) batch by batch (:func:`pipeline.mining.attach_negatives`:
    never gold for a row of the batch, never a duplicate text). Rows and order are unchanged.
    Returns the table and the number of candidates left out by the batch guard."""
    from .mining import attach_negatives

    if not batches[["batch_id", "position"]].apply(tuple, axis=1).is_monotonic_increasing:
        raise ValueError("batches must be in (batch_id, position) order")
    texts, langs, dropped = [], [], 0
    for _, g in batches.groupby("batch_id", sort=True):
        t, lg, d = attach_negatives(g, picker)
        texts += t
        langs += lg
        dropped += d
    out = batches.copy()
    out["hard_negatives"], out["negative_langs"] = texts, langs
    return out, dropped


def assemble(train: pd.DataFrame, dev: pd.DataFrame, languages: list[str], sampling, seed: int
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training batches from ``train`` and validation-loss batches from ``dev`` for ``params.sampling``.

    ``train`` and ``dev`` are the two parts of the split made once by :mod:`pipeline.devset`. The
    validation batches (used only by ``train.select_by: val_loss``) use the run's mode and alpha
    (with exactly ``round(alpha * n)`` X-X batches) and their own random stream; their number ``n``
    is ``sampling.val_batches`` or, when that is unset, :func:`validation_batch_count`.
    """
    train = train.loc[train["lang"].isin(languages)]
    dev = dev.loc[dev["lang"].isin(languages)]
    if train.empty:
        raise BatchingError(f"no training pairs in the training languages {languages}")
    check_languages(train, languages)
    alpha = mode_alpha(sampling.mode, sampling.alpha)
    train_batches = hybrid_batches(train, languages, sampling.batches, sampling.batch_size, alpha,
                                   generator(seed, TRAIN_STREAM), sampling.language_weights)
    n_val = sampling.val_batches or validation_batch_count(dev, sampling.batch_size)
    if dev.empty:
        val_batches = train_batches.iloc[0:0]
    else:
        val_batches = hybrid_batches(dev, languages, n_val, sampling.batch_size, alpha,
                                     generator(seed, VAL_STREAM), sampling.language_weights, exact_share=True)
    return train_batches, val_batches


def batch_statistics(df: pd.DataFrame) -> dict:
    """Flat summary of a batch table: sizes, X-X share, and rows per (query, passage) language pair.

    Keys: ``batches``, ``rows``, ``pair_ids`` (distinct), ``xx_batches``, ``xy_batches``, ``xx_share``,
    (with hard negatives: ``hard_negatives``, ``rows_without_negative``, ``negatives_same_language_as_query``),
    ``short_batches`` (smaller than the largest), ``mean_batch_size``, and ``lang_pair_<q>_<p>`` (rows
    with query language q and passage language p), sorted.
    """
    if df.empty:
        return {"batches": 0, "rows": 0, "pair_ids": 0, "xx_batches": 0, "xy_batches": 0, "xx_share": None,
                "short_batches": 0, "mean_batch_size": None}
    sizes = df.groupby("batch_id").size()
    kinds = df.groupby("batch_id")["kind"].first()
    stats = {
        "batches": int(len(sizes)),
        "rows": int(len(df)),
        "pair_ids": int(df["pair_id"].nunique()),
        "xx_batches": int((kinds == "xx").sum()),
        "xy_batches": int((kinds == "xy").sum()),
        "xx_share": round(float((kinds == "xx").mean()), 6),
        "short_batches": int((sizes < sizes.max()).sum()),
        "mean_batch_size": round(float(sizes.mean()), 3),
    }
    if "hard_negatives" in df.columns:
        n_neg = df["hard_negatives"].apply(len)
        same = [lang == q for q, langs in zip(df["query_lang"], df["negative_langs"], strict=True) for lang in langs]
        stats.update(hard_negatives=int(n_neg.sum()), rows_without_negative=int((n_neg == 0).sum()),
                     negatives_same_language_as_query=int(sum(same)))
    pairs = df.groupby(["query_lang", "passage_lang"]).size()
    for (q, p), n in sorted(pairs.items()):
        stats[f"lang_pair_{q}_{p}"] = int(n)
    return stats
