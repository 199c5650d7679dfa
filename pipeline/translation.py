"""Machine translation with CTranslate2: NLLB-200 (any direction) and Argos Translate packages.

* :class:`NLLBTranslator` runs an NLLB/M2M100 model converted by :func:`convert_nllb`; the source is
  tokenised by the model's Hugging Face tokenizer and the target language is forced with a prefix token.
* :class:`ArgosTranslator` runs an Argos Translate ``.argosmodel`` package (a CTranslate2 model and a
  sentencepiece model in a zip; one fixed direction, no language token).

Both translate text by sentences (:func:`split_sentences`, joined back by :func:`join_sentences`),
all sentences of one call in batches sorted by length; one ``ctranslate2.Translator`` can hold a replica
on each of several GPUs (``device_index``) and runs batches on all of them at once.
The chunks, their resumable work folders and the shard files are in :mod:`pipeline.translation_work`.
:func:`reference_pairs` and :func:`translate_pairs` build the ``translate`` stage's table.
"""
from __future__ import annotations

import json
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from . import console
from .io import atomic_dir, write_json
from .schema import PAIR_COLUMNS, REFERENCE_SYSTEM, SOURCE_COLUMNS
from .text import split_sentences
from .translation_work import Translator, translate_resumable

#: ISO 639-1 (or 639-3 where no 2-letter code exists) -> NLLB-200 (FLORES-200) code.
NLLB_CODES: dict[str, str] = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl",
    "bg": "bul_Cyrl", "bn": "ben_Beng", "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn",
    "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn",
    "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab", "fi": "fin_Latn",
    "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn", "gu": "guj_Gujr", "ha": "hau_Latn",
    "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn",
    "id": "ind_Latn", "ig": "ibo_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan",
    "jv": "jav_Latn", "ka": "kat_Geor", "kk": "kaz_Cyrl", "km": "khm_Khmr", "kn": "kan_Knda",
    "ko": "kor_Hang", "ky": "kir_Cyrl", "lo": "lao_Laoo", "lt": "lit_Latn", "lv": "lvs_Latn",
    "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl", "mr": "mar_Deva", "ms": "zsm_Latn",
    "my": "mya_Mymr", "ne": "npi_Deva", "nl": "nld_Latn", "no": "nob_Latn", "pa": "pan_Guru",
    "pl": "pol_Latn", "ps": "pbt_Arab", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl",
    "si": "sin_Sinh", "sk": "slk_Latn", "sl": "slv_Latn", "so": "som_Latn", "sq": "als_Latn",
    "sr": "srp_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu",
    "tg": "tgk_Cyrl", "th": "tha_Thai", "tl": "tgl_Latn", "tr": "tur_Latn", "uk": "ukr_Cyrl",
    "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn", "yo": "yor_Latn", "zh": "zho_Hans",
    "zu": "zul_Latn",
}

#: Target languages (ISO or NLLB codes) whose sentences are written without a space between them.
NO_SPACE_LANGS = frozenset({"zh", "ja", "th", "zho_Hans", "zho_Hant", "yue_Hant", "jpn_Jpan", "tha_Thai"})



def nllb_code(lang: str) -> str:
    """NLLB-200 code of an ISO 639-1 language code (``"de"`` -> ``"deu_Latn"``); NLLB codes pass through."""
    if lang in NLLB_CODES.values():
        return lang
    try:
        return NLLB_CODES[lang]
    except KeyError:
        raise ValueError(
            f"no NLLB-200 code for language {lang!r}; known ISO codes: {', '.join(sorted(NLLB_CODES))} "
            "(or pass an NLLB code such as 'deu_Latn')"
        ) from None


def join_sentences(sentences: Sequence[str], lang: str) -> str:
    """Inverse of :func:`split_sentences` for a target language: a space between sentences,
    none for Chinese, Japanese and Thai."""
    return ("" if lang in NO_SPACE_LANGS else " ").join(sentences)


class CTranslate2Translator(ABC):
    """Base of the CTranslate2 translators: sentence splitting, sorted batching, decoding options.

    Subclasses set ``self.model`` (a ``ctranslate2.Translator``) and ``self.tgt_lang`` (ISO code,
    used to join sentences) and implement :meth:`_tokenize`, :meth:`_detokenize` and optionally
    :meth:`_target_prefix`.

    Args:
        beam_size: 1 is greedy decoding.
        max_batch_size: sentences (``batch_type="examples"``) or padded source tokens (``"tokens"``) per batch.
        batch_type: ``examples``: batches of ``max_batch_size`` sentences made here from the length-sorted
            sentences; ``tokens``: all sentences of a call go to one ``translate_batch`` call that CTranslate2
            cuts into batches of at most ``max_batch_size`` tokens.
        device: ``cpu``, ``cuda`` or ``auto`` (cuda when CTranslate2 sees a GPU).
        device_index: the GPUs to load a model replica on; batches run on all replicas at once.
        max_decoding_length: output tokens per sentence, a language prefix token included.
        split: translate sentence by sentence (texts are joined back afterwards).
        progress: report progress (a bar on a terminal, log lines elsewhere: :func:`pipeline.console.progress`).
    """

    model = None
    tgt_lang: str = "en"
    model_class = "Translator"  # the ctranslate2 class _load makes (a decoder-only subclass: Generator)

    def __init__(self, beam_size: int = 4, max_batch_size: int = 32, compute_type: str = "int8",
                 inter_threads: int = 1, intra_threads: int = 2, max_decoding_length: int = 256,
                 split: bool = True, progress: bool = True, desc: str = "translate", batch_type: str = "examples",
                 device: str = "cpu", device_index: Sequence[int] = (0,)):
        if batch_type not in ("examples", "tokens"):
            raise ValueError(f"batch_type must be 'examples' or 'tokens', got {batch_type!r}")
        self.beam_size, self.max_batch_size, self.compute_type = beam_size, max_batch_size, compute_type
        self.batch_type, self.device, self.device_index = batch_type, device, list(device_index)
        self.inter_threads, self.intra_threads = inter_threads, intra_threads
        self.max_decoding_length, self.split, self.progress, self.desc = max_decoding_length, split, progress, desc

    @property
    def replicas(self) -> int:
        """Batches CTranslate2 can run at once: one per device index and inter thread."""
        return len(self.device_index) * self.inter_threads

    def _load(self, model_dir: str | Path) -> None:
        import ctranslate2

        if self.device == "cuda":
            found = ctranslate2.get_cuda_device_count()
            missing = [i for i in self.device_index if i >= found]
            if missing:
                raise RuntimeError(f"translate.device: cuda with device_index {self.device_index}, but CTranslate2 "
                                   f"sees {found} CUDA device(s)")
        self.model = getattr(ctranslate2, self.model_class)(
            str(model_dir), device=self.device, device_index=self.device_index, compute_type=self.compute_type,
            inter_threads=self.inter_threads, intra_threads=self.intra_threads)

    @abstractmethod
    def _tokenize(self, sentences: list[str]) -> list[list[str]]:
        """Source tokens of each sentence, as the model's vocabulary strings."""

    @abstractmethod
    def _detokenize(self, tokens: list[str]) -> str:
        """Text of one output hypothesis."""

    def _target_prefix(self) -> list[str] | None:
        """Tokens forced at the start of every output (a language token), or None."""
        return None

    def _translate_batch(self, tokens: list[list[str]], asynchronous: bool = False):
        prefix = self._target_prefix()
        return self.model.translate_batch(
            tokens, target_prefix=[prefix] * len(tokens) if prefix else None, max_batch_size=self.max_batch_size,
            batch_type=self.batch_type, asynchronous=asynchronous, beam_size=self.beam_size,
            max_decoding_length=self.max_decoding_length,
        )

    def translate_tokens(self, sentences: list[str]) -> list[list[str]]:
        """Best hypothesis (output tokens, language prefix included) of each sentence, in input order.

        ``batch_type="examples"``: sentences are tokenised, sorted by token length and decoded
        ``max_batch_size`` at a time; with several replicas (devices) the batches are submitted
        asynchronously and run on all of them at once (the same batches, so the same output).
        ``"tokens"``: one ``translate_batch`` call; CTranslate2 sorts the sentences by length, cuts them
        into batches of at most ``max_batch_size`` tokens and runs those on all replicas.
        """
        tokens = self._tokenize(sentences)
        out: list[list[str]] = [[] for _ in tokens]
        with console.progress(len(tokens), self.desc, "sentences", enabled=self.progress) as bar:
            if self.batch_type == "tokens":
                for i, res in enumerate(self._translate_batch(tokens) if tokens else []):
                    out[i] = res.hypotheses[0]
                bar.update(len(tokens))
                return out
            order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]), reverse=True)
            step = self.max_batch_size
            batches = [order[start : start + step] for start in range(0, len(order), step)]
            if self.replicas > 1:  # all batches queued at once: each replica takes the next free one
                pending = [(idx, self._translate_batch([tokens[i] for i in idx], asynchronous=True))
                           for idx in batches]
                results_of = ((idx, [r.result() for r in async_results]) for idx, async_results in pending)
            else:
                results_of = ((idx, self._translate_batch([tokens[i] for i in idx])) for idx in batches)
            for idx, results in results_of:
                for i, res in zip(idx, results, strict=True):
                    out[i] = res.hypotheses[0]
                bar.update(len(idx))
        return out

    def translate_sentences(self, sentences: list[str]) -> list[str]:
        """Translations of single sentences (no splitting), in input order."""
        return [self._detokenize(t) for t in self.translate_tokens(sentences)]

    def translate(self, texts: list[str]) -> list[str]:
        """Translations of ``texts`` in input order; blank texts stay empty."""
        pieces = [split_sentences(t) if self.split else ([t.strip()] if t.strip() else []) for t in texts]
        flat = [s for p in pieces for s in p]
        done = iter(self.translate_sentences(flat) if flat else [])
        return [join_sentences([next(done) for _ in p], self.tgt_lang) for p in pieces]


class NLLBTranslator(CTranslate2Translator):
    """An NLLB-200 / M2M100 model converted to CTranslate2 (see :func:`convert_nllb`).

    Args:
        model_dir: the CTranslate2 folder.
        tokenizer_dir: the Hugging Face tokenizer folder (default ``model_dir/tokenizer``).
        src_lang, tgt_lang: ISO 639-1 or NLLB codes.
        **options: see :class:`CTranslate2Translator`.
    """

    def __init__(self, model_dir: str | Path, tokenizer_dir: str | Path | None, src_lang: str, tgt_lang: str,
                 **options):
        from transformers import AutoTokenizer

        super().__init__(**options)
        self.src_code, self.tgt_code = nllb_code(src_lang), nllb_code(tgt_lang)
        self.tgt_lang = tgt_lang
        tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else Path(model_dir) / "tokenizer"
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), src_lang=self.src_code)
        if self.tokenizer.convert_tokens_to_ids(self.tgt_code) == self.tokenizer.unk_token_id:
            raise ValueError(f"{tokenizer_dir}: the tokenizer has no language token {self.tgt_code!r}")
        self._load(model_dir)

    def _tokenize(self, sentences: list[str]) -> list[list[str]]:
        ids = self.tokenizer(sentences, add_special_tokens=True)["input_ids"]
        return [self.tokenizer.convert_ids_to_tokens(x) for x in ids]

    def _target_prefix(self) -> list[str]:
        return [self.tgt_code]

    def _detokenize(self, tokens: list[str]) -> str:
        if tokens and tokens[0] == self.tgt_code:
            tokens = tokens[1:]
        return self.tokenizer.decode(self.tokenizer.convert_tokens_to_ids(tokens), skip_special_tokens=True).strip()


class ArgosTranslator(CTranslate2Translator):
    """An Argos Translate ``.argosmodel`` package: a zip with ``<name>/model/`` (CTranslate2) and
    ``<name>/sentencepiece.model``. One fixed direction, given by its ``metadata.json``.

    Args:
        package_path: the ``.argosmodel`` file; unzipped once into ``cache_dir/<file stem>``.
        cache_dir: where packages are unzipped (default: the asset cache, ``PIPELINE_CACHE``).
        **options: see :class:`CTranslate2Translator`.
    """

    def __init__(self, package_path: str | Path, cache_dir: str | Path | None = None, **options):
        import sentencepiece as spm

        super().__init__(**options)
        root = unpack_argos(package_path, cache_dir)
        meta_file = root / "metadata.json"
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
        self.src_lang, self.tgt_lang = meta.get("from_code", "?"), meta.get("to_code", "en")
        self.sp = spm.SentencePieceProcessor(model_file=str(root / "sentencepiece.model"))
        self._load(root / "model")

    def _tokenize(self, sentences: list[str]) -> list[list[str]]:
        return self.sp.encode(sentences, out_type=str)

    def _detokenize(self, tokens: list[str]) -> str:
        return "".join(tokens).replace("▁", " ").strip()


def unpack_argos(package_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Folder of an unzipped ``.argosmodel`` (the one holding ``model/``), extracted once.

    Extraction goes to a temporary folder renamed into place, so a crash never leaves a partial one;
    a ``source.json`` stamp (file name, size, mtime) makes a changed package re-extract. The stanza
    sentence splitter inside the package is not extracted (unused).
    """
    from .assets import build_lock, cache_root

    package_path = Path(package_path)
    if not package_path.is_file():
        raise FileNotFoundError(f"Argos package {package_path} does not exist")
    dest = Path(cache_dir or cache_root() / "argos") / package_path.stem
    st = package_path.stat()
    stamp = {"package": package_path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def extracted() -> bool:
        return (dest / "source.json").exists() and json.loads((dest / "source.json").read_text()) == stamp

    if not extracted():
        with build_lock(dest):  # another process may be extracting it: wait, then reuse its folder
            if not extracted():
                try:
                    with zipfile.ZipFile(package_path) as zf, atomic_dir(dest) as tmp:
                        zf.extractall(tmp, [m for m in zf.namelist() if "/stanza/" not in f"/{m}"])  # no splitter
                        (tmp / "source.json").write_text(json.dumps(stamp))
                except zipfile.BadZipFile as err:
                    raise ValueError(f"Argos package {package_path} is not a zip file: {err}") from None
    roots = [p.parent.parent for p in [*dest.glob("*/model/model.bin"), *dest.glob("model/model.bin")]]
    if len(roots) != 1 or not (roots[0] / "sentencepiece.model").exists():
        raise ValueError(f"Argos package {package_path}: expected one <name>/model/model.bin and "
                         f"<name>/sentencepiece.model inside, found {[str(r) for r in roots]}")
    return roots[0]


def write_ctranslate2(hf_dir: str | Path, dst: str | Path, quantization: str, source: Mapping) -> Path:
    """The one Hugging Face -> CTranslate2 conversion of the translation models (NLLB, a decoder-only
    generator, Gemma): the CTranslate2 model files of ``hf_dir`` at ``quantization`` go into the folder
    ``dst``, its tokenizer into ``dst/tokenizer`` and ``source`` (where the model came from) into
    ``dst/source.json``, written last. Other entries of ``dst`` are kept; callers write ``dst`` inside
    :func:`~pipeline.io.atomic_dir`, so a folder only appears once complete."""
    import tempfile

    import ctranslate2
    from transformers import AutoTokenizer

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst, prefix=".convert.") as work:
        converted = Path(work) / "ct2"  # the converter replaces its output folder: convert beside, then move in
        ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(converted), quantization=quantization,
                                                                          force=True)
        for entry in converted.iterdir():
            entry.rename(dst / entry.name)
    AutoTokenizer.from_pretrained(str(hf_dir)).save_pretrained(str(dst / "tokenizer"))
    write_json(dst / "source.json", dict(source))
    return dst


def convert_nllb(model: str | Path, out_dir: str | Path, quantization: str = "int8") -> Path:
    """Convert an NLLB/M2M100 Hugging Face folder (or hub id) to a CTranslate2 folder ``out_dir``
    (:func:`write_ctranslate2`); ``source.json`` records the source and quantization (and, for a hub id,
    the commit its snapshot resolved to)."""
    from .assets import hub_snapshot, require_safetensors, snapshot_commit

    src = require_safetensors(Path(model) if Path(model).is_dir() else hub_snapshot(str(model)))
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        write_ctranslate2(src, tmp, quantization, {
            "model": str(model), "quantization": quantization,
            **({"commit": snapshot_commit(src)} if snapshot_commit(src) else {})})
    return out_dir


def build_translator(spec, settings, mirror: str | Path, src_lang: str, tgt_lang: str,
                     cache_dir: str | Path, progress: bool = True) -> CTranslate2Translator:
    """A translator for ``src_lang`` -> ``tgt_lang`` from a ``params.TranslationModelSpec`` and the
    ``params.TranslateParams`` decoding settings.

    ``nllb``: the hub model ``spec.hub_id`` is converted into ``cache_dir`` (once, at
    ``settings.compute_type``). ``argos``: the package is fetched (mirror first, sha256 checked) and
    unzipped into ``cache_dir``; its direction must be ``src_lang`` -> ``tgt_lang``. ``gemma``: Gemma 3 270M
    is built once into the asset cache from its installed wheels (:func:`pipeline.gemma.prepare_gemma`, GGUF
    sha256 checked) and prompted with few-shot examples, greedily.
    """
    from .assets import Asset, build_lock, fetch

    cache_dir = Path(cache_dir)
    options = dict(beam_size=settings.beam_size, max_batch_size=settings.batch_size, batch_type=settings.batch_type,
                   compute_type=settings.compute_type, inter_threads=1, intra_threads=settings.threads,
                   device=settings.device, device_index=settings.device_index,
                   max_decoding_length=settings.max_decoding_length, progress=progress,
                   desc=f"translate {src_lang}->{tgt_lang}")
    if spec.kind == "nllb":
        if not spec.hub_id:
            raise ValueError("translate.models: an 'nllb' model needs hub_id")
        ct2_dir = cache_dir / f"{spec.hub_id.replace('/', '--')}-{settings.compute_type}"
        if not (ct2_dir / "source.json").exists():
            with build_lock(ct2_dir):  # another process may be converting it: wait, then reuse its folder
                if not (ct2_dir / "source.json").exists():
                    convert_nllb(spec.hub_id, ct2_dir, settings.compute_type)
        return NLLBTranslator(ct2_dir, ct2_dir / "tokenizer", src_lang, tgt_lang, **options)
    if spec.kind == "argos":
        if (spec.source_lang, spec.target_lang) != (src_lang, tgt_lang):
            raise ValueError(f"translate.models: the Argos package {spec.path or spec.url} translates "
                             f"{spec.source_lang}->{spec.target_lang}, not {src_lang}->{tgt_lang}")
        package = fetch(Asset(Path(spec.path or spec.url or "argos").name, spec.path, spec.url, spec.sha256), mirror)
        return ArgosTranslator(package, cache_dir, **options)
    if spec.kind == "gemma":  # greedy few-shot continuation: translate.beam_size is for the seq2seq models
        from .gemma import prepare_gemma
        from .generation import GeneratorTranslator

        model_dir = prepare_gemma(quantization=settings.compute_type)  # one copy in the asset cache for all uses
        return GeneratorTranslator(model_dir, src_lang, tgt_lang, **{**options, "beam_size": 1})
    raise ValueError(f"translate.models: unknown kind {spec.kind!r} (valid: nllb, argos, gemma)")


class LazyTranslator:
    """A translator built on its first :meth:`translate` call, so a run whose chunks are all finished
    (a merge of shards) never loads a model."""

    def __init__(self, build: Callable[[], Translator]):
        self.build, self.translator = build, None

    def translate(self, texts: list[str]) -> list[str]:
        if self.translator is None:
            self.translator = self.build()
        return self.translator.translate(texts)


OUT_COLUMNS = PAIR_COLUMNS + SOURCE_COLUMNS


def _english(pairs: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {missing} (has {list(pairs.columns)})")
    en = pairs[pairs["lang"] == "en"]
    dup = en["pair_id"][en["pair_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{where}: pair_id {dup.iloc[0]!r} has more than one English row")
    return en


def reference_pairs(pairs: pd.DataFrame, lang: str, where: str = "pairs", allow_empty: bool = False) -> pd.DataFrame:
    """The human translations into ``lang`` that the source carries, joined to their English pair
    (``OUT_COLUMNS``, system ``reference``); pairs without an English row are dropped. No such row is an
    error unless ``allow_empty`` (a target whose gaps a model fills)."""
    en = _english(pairs, where)[["pair_id", "question", "passage"]]
    en = en.rename(columns={"question": "src_question", "passage": "src_passage"})
    rows = pairs[pairs["lang"] == lang].merge(en, on="pair_id", how="inner", validate="many_to_one")
    if rows.empty and not allow_empty:
        raise ValueError(f"{where}: no rows in language {lang!r} with an English pair; a 'reference' "
                         f"target needs a source that carries {lang!r} translations")
    return rows.assign(system=REFERENCE_SYSTEM)[OUT_COLUMNS].reset_index(drop=True)


def pair_texts(pairs: pd.DataFrame, where: str = "pairs") -> list[str]:
    """The distinct texts :func:`translate_pairs` translates, in its order: the English questions, then
    passages, then non-empty contexts (each text once, at its first place)."""
    en = _english(pairs, where)
    context = en["context"].fillna("").astype(str)
    return list(dict.fromkeys([*en["question"], *en["passage"], *[c for c in context if c.strip()]]))


def translate_pairs(pairs: pd.DataFrame, lang: str, translator: Translator, system: str, work_dir: str | Path,
                    chunk_size: int, fingerprint: str = "", where: str = "pairs",
                    known: Mapping[str, list[str]] | None = None) -> pd.DataFrame:
    """Machine-translate the English pairs into ``lang`` (``OUT_COLUMNS``).

    Questions, passages and non-empty contexts (:func:`pair_texts`) are translated together through
    :func:`translate_resumable`, each distinct text once; empty or missing contexts are kept as they are.
    ``known``: chunks finished by shard runs (:func:`read_shards`).
    """
    en = _english(pairs, where).reset_index(drop=True)
    context = en["context"].fillna("").astype(str)
    unique = pair_texts(pairs, where)
    done = dict(zip(unique, translate_resumable(unique, translator, work_dir, chunk_size, fingerprint, known),
                    strict=True))
    return pd.DataFrame({
        "pair_id": en["pair_id"], "source": en["source"], "lang": lang,
        "question": en["question"].map(done), "passage": en["passage"].map(done),
        "context": [done[c] if c.strip() else orig for c, orig in zip(context, en["context"], strict=True)],
        "system": system,
        "src_question": en["question"], "src_passage": en["passage"],
    })[OUT_COLUMNS]
