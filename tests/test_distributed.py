"""Gradient caching (cached InfoNCE) and data-parallel training over torch.distributed (two gloo
processes on this CPU), on the tiny BERT of test_training. Gradients are compared by relative norm
(:func:`assert_same_grads`)."""
import json
import os
import socket

import pytest
import torch

from test_training import LANGS, ENCODING, PARAMS, dev_set, pair_table, tiny_model  # noqa: F401  (fixture)
from pipeline.batching import generator, hybrid_batches
from pipeline.params import TrainParams

CPU = torch.device("cpu")
FP32 = PARAMS.model_copy(update={"precision": "fp32", "micro_batch": 4})
TOL = 1e-5


def batch16(hard: int = 5):
    """One mixed batch of 16 pairs and a flat list of ``hard`` hard negatives (not one per pair)."""
    from pipeline.dual_encoder import text_batches

    b = text_batches(hybrid_batches(pair_table(), LANGS, 1, 16, 0.0, generator(3, 1)))[0]
    b.hard_negatives = [p.replace(" t", " x t") for p in b.passages[:hard]] if hard else None
    return b


def encoder(model_dir, train_mode: bool):
    from pipeline.dual_encoder import DualEncoder
    from pipeline.model_io import load_encoder

    enc = DualEncoder(*load_encoder(model_dir, CPU), max_length=32)
    enc.model.train(train_mode)
    return enc


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def assert_same_grads(a: dict, b: dict, tol: float = TOL):
    """The whole gradient within ``tol`` relative norm, and each tensor within ``tol`` of its own norm
    (or of 1% of the whole gradient's, for tensors whose gradient is ~0 in exact arithmetic, such as
    the attention key biases: softmax ignores a constant added to every key)."""
    assert a.keys() == b.keys() and a
    whole = torch.cat([b[n].flatten() for n in b]).norm()
    diff = torch.cat([(a[n] - b[n]).flatten() for n in b]).norm()
    assert (diff / whole).item() < tol, (diff / whole).item()
    for n in b:
        rel = ((a[n] - b[n]).norm() / torch.maximum(b[n].norm(), 0.01 * whole)).item()
        assert rel < tol, (n, rel)


def reference(enc, batch, params, seed=3):
    """The uncached one-process loss (micro_batch passes) and its gradients, from RNG state ``seed``."""
    enc.model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = enc.loss(batch, params.scale, params.precision, params.micro_batch)
    loss.backward()
    return loss.item(), grads(enc.model)


def cached(enc, batch, params, seed=3):
    from pipeline.training import contrastive_backward

    enc.model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = contrastive_backward(enc, batch, params)
    return loss, grads(enc.model)


@pytest.mark.slow
def test_cached_info_nce_gives_the_uncached_loss_and_gradients_with_dropout_and_hard_negatives(tiny_model):  # noqa: F811
    enc = encoder(tiny_model, train_mode=True)  # dropout on (0.1 in the config)
    batch = batch16(hard=5)
    for precision in ("fp32", "bf16"):
        params = FP32.model_copy(update={"precision": precision})
        ref_loss, ref_grads = reference(enc, batch, params)  # forward passes of 4, as the cached chunks
        loss, g = cached(enc, batch, params.model_copy(update={"mini_batch_size": 4}))
        assert loss == pytest.approx(ref_loss, rel=TOL)
        assert_same_grads(g, ref_grads)
    other, _ = cached(enc, batch, FP32.model_copy(update={"mini_batch_size": 4}), seed=4)
    assert other != pytest.approx(ref_loss, rel=1e-4)  # dropout really is on: another seed, another loss
    # without dropout the chunks equal one pass over the whole batch (padding is masked); no hard negatives too
    enc.model.eval()
    for hard in (5, 0):
        b = batch16(hard)
        ref_loss, ref_grads = reference(enc, b, FP32.model_copy(update={"micro_batch": None}))
        loss, g = cached(enc, b, FP32.model_copy(update={"mini_batch_size": 4}))
        assert loss == pytest.approx(ref_loss, rel=TOL)
        assert_same_grads(g, ref_grads)


def test_cached_training_runs_through_train(tiny_model):  # noqa: F811
    from test_training import run

    _, _, m = run(tiny_model, PARAMS.model_copy(update={"steps": 4, "mini_batch_size": 3}))
    assert m["steps_run"] == 4 and m["final_train_loss"] > 0


def test_bounds_and_shard_split_one_batch_contiguously():
    from pipeline.distributed import SINGLE, Dist, bounds, shard

    assert [bounds(5, 2, r) for r in range(2)] == [(0, 3), (3, 5)]
    assert [bounds(2, 3, r) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]
    b = batch16(hard=1)
    parts = [shard(b, Dist(r, 2)) for r in range(2)]
    assert sum((p.queries for p in parts), []) == b.queries and sum((p.passages for p in parts), []) == b.passages
    assert parts[0].hard_negatives == b.hard_negatives and parts[1].hard_negatives == []
    assert shard(b, SINGLE) is b
    with pytest.raises(ValueError, match="cannot be split"):
        shard(b, Dist(0, 17))


def test_new_train_params_are_validated():
    from pydantic import ValidationError

    p = TrainParams()
    assert p.mini_batch_size is None and p.cross_device_negatives is True
    assert TrainParams(mini_batch_size=1).mini_batch_size == 1
    for bad in ({"mini_batch_size": 0}, {"mini_batch_size": -4}, {"mini_batch_size": True},
                {"mini_batch_size": 2.5}, {"cross_device_negatives": "yes"}, {"cross_device_negatives": 1},
                {"cross_device_negatives": None}):
        with pytest.raises(ValidationError):
            TrainParams(**bad)
    from pipeline.params import load_params

    t = load_params().train  # params.yaml keeps today's behaviour
    assert t.mini_batch_size is None and t.cross_device_negatives is True


# ---- two processes --------------------------------------------------------------------------------

CASES = {"gathered": {}, "local": {"cross_device_negatives": False}, "cached": {"mini_batch_size": 4}}


def _worker(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    """One of ``world`` gloo processes: the loss and gradients of each case, then a short X-X run."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    import pipeline.dual_encoder as dual_encoder
    import pipeline.gradcache as gradcache
    import pipeline.training as training
    from pipeline import distributed

    torch.set_num_threads(1)
    d, device = distributed.setup("cpu")
    try:
        assert d.world_size == world and d.rank == rank and device.type == "cpu"
        enc = encoder(model_dir, train_mode=False)  # dropout off: the ranks' draws differ by design
        trainable = [p for p in enc.model.parameters() if p.requires_grad]
        batch = batch16(hard=5)
        for name, update in CASES.items():
            params = FP32.model_copy(update=update)
            enc.model.zero_grad(set_to_none=True)
            loss = training.contrastive_backward(enc, batch, params, d)
            distributed.reduce_gradients(trainable, d, average=not params.cross_device_negatives)
            torch.save({"loss": loss, "grads": grads(enc.model)}, f"{out}/{name}.{rank}.pt")

        # an X-X run through train(): record the texts each forward pass of this rank embedded
        seen: list = []
        encode_pass, step_fn = dual_encoder._encode_pass, training.optimisation_step

        def recording_pass(e, ids, precision):
            if e.model.training and torch.is_grad_enabled():  # the graph passes (caching embeds twice)
                seen[-1].extend(e.tokenizer.batch_decode(ids, skip_special_tokens=True))
            return encode_pass(e, ids, precision)

        def recording_step(*a, **k):
            seen.append([])
            return step_fn(*a, **k)

        dual_encoder._encode_pass = gradcache._encode_pass = recording_pass  # every forward pass of training
        training.optimisation_step = recording_step
        xx = dual_encoder.text_batches(hybrid_batches(pair_table(), LANGS, 4, 8, 1.0, generator(5, 1)))
        params = PARAMS.model_copy(update={"steps": 4, "eval_every": 2, "select_by": "last", "mini_batch_size": 2})
        model, _, metrics = training.train(model_dir, xx, [], params, ENCODING, 7, device=CPU, progress=False,
                                           dev=dev_set(), dist=d)
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.save(weights, f"{out}/weights.{rank}.pt")
        with open(f"{out}/xx.{rank}.json", "w") as f:
            json.dump({"seen": seen, "batches": [b.queries + b.passages for b in xx], "metrics": metrics}, f)
    finally:
        distributed.teardown(d)


@pytest.fixture(scope="module")
def two_processes(tiny_model, tmp_path_factory):  # noqa: F811
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("dist")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tiny_model), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.slow
def test_two_processes_give_the_one_process_loss_and_gradients(two_processes, tiny_model):  # noqa: F811
    enc = encoder(tiny_model, train_mode=False)
    batch = batch16(hard=5)  # 16 pairs -> 8 + 8; 5 hard negatives -> 3 + 2
    ref_loss, ref_grads = reference(enc, batch, FP32)
    for name in ("gathered", "cached"):  # cached + distributed too
        for rank in (0, 1):
            r = torch.load(two_processes / f"{name}.{rank}.pt")
            assert r["loss"] == pytest.approx(ref_loss, rel=TOL), (name, rank)
            assert_same_grads(r["grads"], ref_grads)


@pytest.mark.slow
def test_without_cross_device_negatives_the_loss_is_the_mean_of_the_slice_losses(two_processes, tiny_model):  # noqa: F811
    from pipeline.distributed import Dist, shard

    enc = encoder(tiny_model, train_mode=False)
    batch = batch16(hard=5)
    slices = [reference(enc, shard(batch, Dist(r, 2)), FP32) for r in range(2)]
    mean_loss = sum(s[0] for s in slices) / 2
    mean_grads = {n: (slices[0][1][n] + slices[1][1][n]) / 2 for n in slices[0][1]}
    r = torch.load(two_processes / "local.0.pt")
    assert r["loss"] == pytest.approx(mean_loss, rel=TOL)
    assert r["loss"] < reference(enc, batch, FP32)[0] - 0.1  # fewer negatives per query: an easier task
    assert_same_grads(r["grads"], mean_grads)


@pytest.mark.slow
def test_distributed_x_x_batches_stay_one_language_across_ranks(two_processes):
    runs = [json.loads((two_processes / f"xx.{rank}.json").read_text()) for rank in (0, 1)]
    batches = runs[0]["batches"]
    assert len(runs[0]["seen"]) == len(runs[1]["seen"]) == 4
    for step in range(4):
        texts = [t for r in runs for t in r["seen"][step]]
        assert all(r["seen"][step] for r in runs), "each rank embedded its own slice"
        langs = {"en" if ("what" in t or "answer" in t) else "de" for t in texts}
        assert len(langs) == 1, (step, texts)
        # together the ranks embedded exactly the global batch (prefixes and case aside)
        want = sorted(t.lower() for t in batches[step])
        assert sorted(t.split(" : ", 1)[1] if " : " in t else t for t in texts) == want
    assert runs[0]["metrics"]["processes"] == 2 and runs[0]["metrics"]["steps_run"] == 4
    assert runs[1]["metrics"] is None  # only rank 0 reports
    w0, w1 = (torch.load(two_processes / f"weights.{rank}.pt") for rank in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "the ranks' weights stay in sync"


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["torchrun", "train.processes"])
def test_the_train_stage_runs_unchanged_under_torchrun(tiny_model, tmp_path, monkeypatch, launch):  # noqa: F811
    """``torchrun --nproc_per_node 2 -m pipeline.stages.train``, or the plain stage command with
    ``train.processes: 2`` (what ``dvc exp run -S train.processes=2`` runs): rank 0 alone writes the
    model and metrics."""
    import subprocess
    import sys

    import pipeline.params
    from conftest import ROOT
    from test_training import _stage_params

    from pipeline.stages import assemble, split

    monkeypatch.chdir(tmp_path)
    processes = 2 if launch == "train.processes" else 1
    monkeypatch.setattr(pipeline.params, "PARAMS_FILE", _stage_params(tmp_path, mini_batch_size=3,
                                                                      processes=processes))
    (tmp_path / "data/filtered").mkdir(parents=True)
    pair_table().to_parquet("data/filtered/pairs.parquet", index=False)
    split.main([])
    assemble.main([])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_PARAMS": str(tmp_path / "params.yaml")}
    launcher = (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                if launch == "torchrun" else [])
    run = subprocess.run([sys.executable, *launcher, "-m", "pipeline.stages.train", "--base", str(tiny_model)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    m = json.loads((tmp_path / "metrics/train.json").read_text())
    assert m["processes"] == 2 and m["steps_run"] == 4 and m["select_by"] == "dev"
    assert (tmp_path / "models/trained/model.safetensors").exists()
    assert (tmp_path / "dvclive/train/plots/metrics/train/loss.tsv").exists()
    assert len((tmp_path / "dvclive/train/plots/metrics/train/loss.tsv").read_text().splitlines()) == 5  # once


@pytest.mark.slow
def test_relaunch_runs_the_module_under_torchrun_and_names_a_failed_rank(tmp_path, monkeypatch):
    """``train.processes: N`` goes through :func:`pipeline.distributed.relaunch`: N real processes with
    torchrun's environment, nothing for one process or inside torchrun, a failed rank as one error."""
    from pipeline.distributed import relaunch
    from pipeline.errors import PipelineError

    (tmp_path / "rankprobe.py").write_text(
        "import os, sys\n"
        "rank = os.environ['RANK']\n"
        "open(os.path.join(sys.argv[1], 'rank' + rank), 'w').write(os.environ['WORLD_SIZE'])\n"
        "sys.exit(3 if len(sys.argv) > 2 and sys.argv[2] == rank else 0)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    assert relaunch(1, "rankprobe", [str(out)]) is False and not list(out.iterdir())
    assert relaunch(2, "rankprobe", [str(out)]) is True
    assert {f.name: f.read_text() for f in out.iterdir()} == {"rank0": "2", "rank1": "2"}
    with pytest.raises(PipelineError, match="rank 1 failed with exit code 3"):
        relaunch(2, "rankprobe", [str(out), "1"])
    monkeypatch.setenv("WORLD_SIZE", "2")  # already a torchrun worker: the caller takes its slice
    assert relaunch(2, "rankprobe", [str(out)]) is False
