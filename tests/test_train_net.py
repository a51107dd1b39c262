"""The training engine end to end: CPU AMP, exact resume after an interrupt, atomic
checkpoints, SyncBN conversion, the resumable loader, a 2-process gloo run, and (when the
model and data are available) a few iterations of train_net on the synthetic data."""
import glob
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, DatasetFromList
from detectron2.engine import HookBase
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from torch import nn

from mask2former.config import build_config
from mask2former.engine import (
    AtomicDetectionCheckpointer,
    CPUAMPTrainer,
    IterationBatchDataset,
    ResumableTrainLoader,
    Trainer,
    adapt_sync_batchnorm,
    launch,
)

REPO = Path(__file__).resolve().parents[1]
TOY_DATASET = "toy_train_net_train"
_TOY_SIZE = 16


# ---------------------------------------------------------------- stand-ins
class ToyTrainNetModel(nn.Module):
    """Tiny segmenter with the pieces the engine cares about: a "backbone" with (Sync)BN,
    an embedding, dropout and a random term in the loss (like point sampling)."""

    def __init__(self, cfg):
        super().__init__()
        norm = nn.SyncBatchNorm if cfg.MODEL.RESNETS.NORM == "SyncBN" else nn.BatchNorm2d
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm(8), nn.ReLU())
        self.query_embed = nn.Embedding(2, 8)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Conv2d(8, 2, 1)
        self.to(cfg.MODEL.DEVICE)

    def forward(self, batched_inputs):
        images = torch.stack([x["image"] for x in batched_inputs]).float() / 255.0
        feats = self.dropout(self.backbone(images))
        feats = feats + self.query_embed.weight.mean(0)[None, :, None, None]
        logits = self.head(feats)
        if not self.training:
            return [{"sem_seg": p.softmax(0)} for p in logits]
        target = (images[:, 0] > 0.5).long()
        noise = torch.rand_like(logits)
        return {
            "loss_ce": F.cross_entropy(logits, target),
            "loss_noise": 0.01 * (logits.float() * noise).mean().abs(),
        }


if "ToyTrainNetModel" not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(ToyTrainNetModel)


def _toy_dicts():
    return [{"file_name": f"toy_{i}", "image_id": i, "height": _TOY_SIZE, "width": _TOY_SIZE} for i in range(10)]


if TOY_DATASET not in DatasetCatalog.list():
    DatasetCatalog.register(TOY_DATASET, _toy_dicts)


def toy_mapper(d):
    """Random 'augmentation' through numpy's global generator, like detectron2's transforms."""
    base = np.full((3, _TOY_SIZE, _TOY_SIZE), d["image_id"] * 20, dtype=np.int64)
    jitter = np.random.randint(0, 120, size=base.shape)
    img = torch.from_numpy((base + jitter).clip(0, 255).astype(np.uint8))
    return {"image": img, "image_id": d["image_id"], "height": _TOY_SIZE, "width": _TOY_SIZE}


class ToyTrainer(Trainer):
    @classmethod
    def build_train_loader(cls, cfg, mapper=None):
        return super().build_train_loader(cfg, mapper=toy_mapper)


def toy_cfg(output_dir, **overrides):
    cfg = build_config()
    cfg.MODEL.META_ARCHITECTURE = "ToyTrainNetModel"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.DATASETS.TRAIN = (TOY_DATASET,)
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.BASE_LR = 1e-2
    cfg.SOLVER.MAX_ITER = 6
    cfg.SOLVER.CHECKPOINT_PERIOD = 3
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(output_dir)
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg


class _Interrupt(Exception):
    pass


class _InterruptAfter(HookBase):
    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise _Interrupt()


def _train(cfg, resume=False, interrupt_after=None):
    seed_all_rng(cfg.SEED if cfg.SEED >= 0 else None)  # as train_net's default_setup does
    trainer = ToyTrainer(cfg)
    if interrupt_after is not None:
        trainer.register_hooks([_InterruptAfter(interrupt_after)])
    trainer.resume_or_load(resume=resume)
    try:
        trainer.train()
    except _Interrupt:
        pass
    return trainer


def _model_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "cpu_bf16_amp"])
def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, amp):
    straight = _train(toy_cfg(tmp_path / "straight", **{"SOLVER.AMP.ENABLED": amp, "SEED": 5}))
    cfg = toy_cfg(tmp_path / "resumed", **{"SOLVER.AMP.ENABLED": amp, "SEED": 5})
    _train(cfg, interrupt_after=4)  # dies after iteration 4; last checkpoint is at 2
    assert os.path.isfile(tmp_path / "resumed" / "model_0000002.pth")
    resumed = _train(cfg, resume=True)
    assert resumed.start_iter == 3
    assert isinstance(resumed._trainer, CPUAMPTrainer) == amp
    a, b = _model_state(straight), _model_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=1e-5), k
    # Optimizer moments and the schedule resumed too.
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for idx in sa:
        assert torch.allclose(sa[idx]["exp_avg_sq"], sb[idx]["exp_avg_sq"], atol=1e-8)
    assert straight.scheduler.get_last_lr() == pytest.approx(resumed.scheduler.get_last_lr())
    # And the runs really trained (weights moved away from a fresh init with this seed).
    seed_all_rng(5)
    fresh = ToyTrainer(toy_cfg(tmp_path / "fresh", **{"SEED": 5})).model.state_dict()
    assert not torch.allclose(fresh["head.weight"], a["head.weight"])


def test_unseeded_runs_draw_a_seed_that_the_checkpoint_keeps(tmp_path):
    first = _train(toy_cfg(tmp_path / "a", **{"SOLVER.MAX_ITER": 3}))
    second = ToyTrainer(toy_cfg(tmp_path / "b"))
    assert first.seed != second.seed  # SEED=-1: a fresh random seed per run
    ckpt = torch.load(tmp_path / "a" / "model_final.pth", weights_only=False)
    assert ckpt["trainer"]["seed"] == first.seed
    assert ckpt["trainer"]["iteration"] == 2
    assert len(ckpt["trainer"]["_trainer"]["optimizer"]["state"]) > 0
    assert ckpt["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 3
    resumed = ToyTrainer(toy_cfg(tmp_path / "a"))
    resumed.resume_or_load(resume=True)
    assert resumed.seed == first.seed and resumed.start_iter == 3
    assert resumed._trainer.data_loader.start_iter == 3


def test_cpu_fp16_amp_uses_and_restores_grad_scaler(tmp_path):
    cfg = toy_cfg(tmp_path, **{"SOLVER.AMP.ENABLED": True, "SOLVER.MAX_ITER": 3})
    cfg.MASK2FORMER.CPU_AMP_DTYPE = "float16"
    trainer = _train(cfg)
    assert trainer._trainer.grad_scaler is not None
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert "grad_scaler" in saved["trainer"]["_trainer"]
    resumed = ToyTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed._trainer.grad_scaler.get_scale() == trainer._trainer.grad_scaler.get_scale()
    cfg.MASK2FORMER.CPU_AMP_DTYPE = "int8"
    with pytest.raises(ValueError, match="CPU_AMP_DTYPE"):
        ToyTrainer(cfg)


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    ckpt = AtomicDetectionCheckpointer(model, str(tmp_path))
    ckpt.save("model_a")
    good = (tmp_path / "model_a.pth").read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save("model_a")
    with pytest.raises(OSError):
        ckpt.save("model_b")
    monkeypatch.undo()
    assert (tmp_path / "model_a.pth").read_bytes() == good
    assert not (tmp_path / "model_b.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_a.pth"]  # no temp files left
    loaded = torch.load(tmp_path / "model_a.pth", weights_only=False)
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())


def test_sync_batchnorm_becomes_batchnorm_in_one_cpu_process(tmp_path):
    cfg = toy_cfg(tmp_path, **{"MODEL.RESNETS.NORM": "SyncBN"})
    model = ToyTrainNetModel(cfg)
    with torch.no_grad():
        model.backbone[1].running_mean.fill_(0.5)
    adapt_sync_batchnorm(model, world_size=1, device="cpu")
    bn = model.backbone[1]
    assert type(bn) is nn.BatchNorm2d and torch.all(bn.running_mean == 0.5)
    # And it trains (SyncBN configs must run on CPU).
    trainer = _train(toy_cfg(tmp_path / "run", **{"MODEL.RESNETS.NORM": "SyncBN", "SOLVER.MAX_ITER": 2}))
    assert trainer.iter == 2


def test_loader_batches_depend_only_on_seed_and_iteration():
    dicts = DatasetFromList(_toy_dicts(), copy=False, serialize=True)

    def batches(start, rank=0, world=1, n=4):
        ds = IterationBatchDataset(dicts, toy_mapper, total_batch_size=4, rank=rank, world_size=world, seed=7)
        it = iter(ResumableTrainLoader(ds, start_iter=start))
        return [next(it) for _ in range(n)]

    full = batches(0, n=6)
    later = batches(3, n=3)
    for a, b in zip(full[3:], later):
        assert [x["image_id"] for x in a] == [x["image_id"] for x in b]
        assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))
    # Two ranks split every global batch between them.
    r0, r1 = batches(0, 0, 2, 6), batches(0, 1, 2, 6)
    for whole, p0, p1 in zip(full, r0, r1):
        assert [x["image_id"] for x in whole] == [x["image_id"] for x in p0 + p1]
        assert torch.equal(whole[3]["image"], p1[1]["image"])
    # Epochs: 10 images, 4 per batch: the first 10 samples are a permutation of the dataset.
    first_epoch = [x["image_id"] for b in full for x in b][:10]
    assert sorted(first_epoch) == list(range(10))
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        IterationBatchDataset(dicts, toy_mapper, total_batch_size=3, world_size=2)


def _two_process_main(output_dir):
    cfg = toy_cfg(output_dir, **{"MODEL.RESNETS.NORM": "SyncBN", "SOLVER.MAX_ITER": 3, "SEED": 3})
    trainer = ToyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module  # DDP on CPU
    torch.save(
        {
            "state": model.state_dict(),
            "bn_type": type(model.backbone[1]).__name__,
            "world_size": comm.get_world_size(),
        },
        os.path.join(output_dir, f"rank{comm.get_rank()}.pt"),
    )


def test_two_cpu_processes_with_gloo(tmp_path):
    launch(_two_process_main, 2, dist_url="auto", args=(str(tmp_path),))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["bn_type"] == "NaiveSyncBatchNorm"
    for k, v in r0["state"].items():
        # DDP all-reduces gradients: both replicas hold the same weights after training.
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.allclose(v.float(), r1["state"][k].float(), atol=1e-6), k
    assert os.path.isfile(tmp_path / "model_final.pth")  # written by rank 0 only
    metrics = (tmp_path / "metrics.json").read_text().strip().splitlines()
    assert metrics and "loss_ce" in metrics[-1]


# ------------------------------------------------- the real model on the built-in data
QUICKSTART_TEST_CONFIG = REPO / "configs" / "quickstart" / "panoptic_R18_synthetic_test.yaml"


def _args(output_dir, *opts, resume=False, eval_only=False):
    from detectron2.engine import default_argument_parser

    argv = ["--config-file", str(QUICKSTART_TEST_CONFIG)]
    argv += ["--resume"] * resume + ["--eval-only"] * eval_only
    return default_argument_parser().parse_args(argv + ["OUTPUT_DIR", str(output_dir), *opts])


@pytest.fixture(scope="module")
def train_net():
    sys.path.insert(0, str(REPO))
    try:
        import train_net as module
    finally:
        sys.path.remove(str(REPO))
    return module


def test_train_net_trains_and_evaluates_pq_ap_miou(tmp_path, train_net):
    results = train_net.main(_args(tmp_path))
    assert set(results) >= {"panoptic_seg", "sem_seg", "segm"}, results.keys()
    for task, metric in (("panoptic_seg", "PQ"), ("sem_seg", "mIoU"), ("segm", "AP")):
        value = results[task][metric]
        assert np.isfinite(value) and 0.0 <= value <= 100.0, (task, value)
    names = set(os.listdir(tmp_path))
    assert {"model_final.pth", "last_checkpoint", "metrics.json", "config.yaml", "log.txt"} <= names
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
    assert "total_loss" in (tmp_path / "metrics.json").read_text()
    # --eval-only on the final weights reproduces the numbers of the end-of-training eval.
    again = train_net.main(_args(tmp_path, "MODEL.WEIGHTS", str(tmp_path / "model_final.pth"), eval_only=True))
    assert again["panoptic_seg"]["PQ"] == pytest.approx(results["panoptic_seg"]["PQ"], abs=1e-6)


def test_train_net_resume_matches_uninterrupted_with_real_model(tmp_path, train_net, monkeypatch):
    opts = ("DATASETS.TEST", "[]", "SEED", "11", "SOLVER.AMP.ENABLED", "True")
    straight = Trainer(train_net.setup_cfg(_args(tmp_path / "straight", *opts)))
    straight.resume_or_load(resume=False)
    straight.train()

    cfg = train_net.setup_cfg(_args(tmp_path / "resumed", *opts))
    seed_all_rng(11)
    interrupted = Trainer(cfg)
    interrupted.register_hooks([_InterruptAfter(2)])
    interrupted.resume_or_load(resume=False)
    with pytest.raises(_Interrupt):
        interrupted.train()
    seed_all_rng(12345)  # whatever the global state, the resumed run replays the same steps
    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5, rtol=1e-4), k


def test_train_net_two_processes_on_cpu(tmp_path):
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "train_net.py"), "--num-gpus", "2", "--dist-url", "auto",
           "--config-file", str(QUICKSTART_TEST_CONFIG), "OUTPUT_DIR", str(tmp_path),
           "SOLVER.MAX_ITER", "2", "MODEL.DEVICE", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert "World size: 2" in log
    assert "Final evaluation" in log and "PQ=" in log  # results gathered and reported on rank 0
    assert (tmp_path / "model_final.pth").is_file()
