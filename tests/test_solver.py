"""Optimizer parameter groups, weight-decay rules, gradient clipping and LR schedules."""
import copy
import math

import pytest
import torch
from torch import nn

from mask2former.config import build_config
from mask2former.engine import WarmupPolyLR, build_lr_scheduler, build_optimizer


def _cfg(**solver):
    cfg = build_config()
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


class _SwinishBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(8)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))
        self.qkv = nn.Linear(8, 24)


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.block = _SwinishBlock()
        self.frozen = nn.Conv2d(8, 8, 1)
        self.frozen.weight.requires_grad_(False)
        self.frozen.bias.requires_grad_(False)


class _PixelDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.gn = nn.GroupNorm(2, 8)
        self.level_embed = nn.Parameter(torch.zeros(3, 8))


class _Predictor(nn.Module):
    def __init__(self):
        super().__init__()
        self.query_feat = nn.Embedding(5, 8)
        self.query_embed = nn.Embedding(5, 8)
        self.level_embed = nn.Embedding(3, 8)
        self.decoder_norm = nn.LayerNorm(8)
        self.class_embed = nn.Linear(8, 4)


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.pixel_decoder = _PixelDecoder()
        self.predictor = _Predictor()


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Backbone()
        self.sem_seg_head = _Head()
        # A parameter shared by two modules must be optimized once.
        self.tied = nn.Linear(8, 8)
        self.tied_again = self.tied


def _lr_wd_by_name(model, groups):
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    return {name: by_id.get(id(p)) for name, p in model.named_parameters()}


def test_param_rules_and_grouping():
    model = _Model()
    optimizer = build_optimizer(_cfg(), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    got = _lr_wd_by_name(model, optimizer.param_groups)
    base, bb = 1e-4, 1e-4 * 0.1
    expected = {
        "backbone.stem.weight": (bb, 0.05),
        "backbone.stem.bias": (bb, 0.05),
        "backbone.bn.weight": (bb, 0.0),
        "backbone.bn.bias": (bb, 0.0),
        "backbone.absolute_pos_embed": (bb, 0.0),
        "backbone.block.norm1.weight": (bb, 0.0),
        "backbone.block.relative_position_bias_table": (bb, 0.0),
        "backbone.block.qkv.weight": (bb, 0.05),
        "backbone.frozen.weight": None,  # not trainable: not optimized
        "backbone.frozen.bias": None,
        "sem_seg_head.pixel_decoder.conv.weight": (base, 0.05),
        "sem_seg_head.pixel_decoder.gn.weight": (base, 0.0),
        # A bare Parameter keeps weight decay in the published recipe.
        "sem_seg_head.pixel_decoder.level_embed": (base, 0.05),
        "sem_seg_head.predictor.query_feat.weight": (base, 0.0),
        "sem_seg_head.predictor.query_embed.weight": (base, 0.0),
        "sem_seg_head.predictor.level_embed.weight": (base, 0.0),
        "sem_seg_head.predictor.decoder_norm.bias": (base, 0.0),
        "sem_seg_head.predictor.class_embed.weight": (base, 0.05),
        "tied.weight": (base, 0.05),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value) if value else got[name] is None, name
    # Grouped by (lr, wd): backbone x {decay, no decay} + head x {decay, no decay}.
    assert len(optimizer.param_groups) == 4
    all_params = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params})  # tied weight only once
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in all_params} == trainable


def test_embed_parameter_names_and_embed_decay():
    model = _Model()
    cfg = _cfg(WEIGHT_DECAY_EMBED=0.01, WEIGHT_DECAY_NORM=0.02)
    cfg.MASK2FORMER.WEIGHT_DECAY_EMBED_PARAMETERS = ["level_embed"]
    got = _lr_wd_by_name(model, build_optimizer(cfg, model).param_groups)
    assert got["sem_seg_head.pixel_decoder.level_embed"] == pytest.approx((1e-4, 0.01))
    assert got["sem_seg_head.predictor.query_embed.weight"] == pytest.approx((1e-4, 0.01))
    assert got["backbone.bn.weight"] == pytest.approx((1e-5, 0.02))
    # Swin tables are never decayed, whatever the norm/embed decays are.
    assert got["backbone.block.relative_position_bias_table"] == pytest.approx((1e-5, 0.0))


def test_sgd_and_bad_optimizer_name():
    model = _Model()
    opt = build_optimizer(_cfg(OPTIMIZER="SGD", MOMENTUM=0.9), model)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="LAMB"), model)


def _one_step_with_grads(cfg, grads):
    p1, p2 = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    model = nn.Module()
    model.a, model.b = nn.Linear(1, 1), nn.Linear(1, 1)
    model.a.weight, model.b.weight = p1, p2
    del model.a.bias, model.b.bias
    model.a.bias = model.b.bias = None
    opt = build_optimizer(cfg, model)
    p1.grad, p2.grad = grads[0].clone(), grads[1].clone()
    opt.step()
    return p1.grad, p2.grad


def test_full_model_clipping_uses_one_global_norm():
    cfg = _cfg(OPTIMIZER="SGD", MOMENTUM=0.0, WEIGHT_DECAY=0.0, BASE_LR=1.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    g1, g2 = _one_step_with_grads(cfg, [torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])])
    # Global norm 5 -> both scaled by 1/5 (per-parameter clipping would give 1.0 and 1.0).
    assert torch.allclose(g1, torch.tensor([0.6, 0.0]), atol=1e-6)
    assert torch.allclose(g2, torch.tensor([0.0, 0.8]), atol=1e-6)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    g1, g2 = _one_step_with_grads(cfg, [torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])])
    assert torch.allclose(g1, torch.tensor([1.0, 0.0]), atol=1e-6)
    assert torch.allclose(g2, torch.tensor([0.0, 1.0]), atol=1e-6)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "nonsense"
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        _one_step_with_grads(cfg, [torch.zeros(2), torch.zeros(2)])


def _lrs(scheduler, optimizer, n):
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_poly_schedule_values():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = WarmupPolyLR(opt, max_iters=100, warmup_factor=0.1, warmup_iters=10, power=0.9)
    lrs = _lrs(sched, opt, 100)
    for it in (0, 5, 10, 50, 99):
        warm = 0.1 * (1 - it / 10) + it / 10 if it < 10 else 1.0
        assert lrs[it] == pytest.approx(0.5 * warm * (1 - it / 100) ** 0.9), it
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # decreasing after warm-up


def test_poly_constant_ending_and_cfg():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupPolyLR", MAX_ITER=100, WARMUP_ITERS=0, WARMUP_FACTOR=1.0)
    cfg.SOLVER.POLY_LR_POWER = 1.0
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.2
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_lr_scheduler(cfg, opt)
    assert isinstance(sched, WarmupPolyLR)
    lrs = _lrs(sched, opt, 100)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[50] == pytest.approx(0.5)
    assert lrs[79] == pytest.approx(0.21)
    assert lrs[85] == pytest.approx(0.2) and lrs[99] == pytest.approx(0.2)


def test_multistep_schedule_from_detectron2_and_unknown_name():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupMultiStepLR", MAX_ITER=100, STEPS=(50, 80), GAMMA=0.1)
    cfg.SOLVER.WARMUP_ITERS = 0
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    lrs = _lrs(build_lr_scheduler(cfg, opt), opt, 100)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.1)
    assert math.isclose(lrs[90], 0.01, rel_tol=1e-6)
    cfg.SOLVER.LR_SCHEDULER_NAME = "Nope"
    with pytest.raises(ValueError, match="LR_SCHEDULER_NAME"):
        build_lr_scheduler(cfg, opt)


def test_adamw_runs_fused_with_the_default_update():
    """The fused AdamW kernel makes the same update as the per-parameter loop, up to rounding."""
    torch.manual_seed(0)
    model = _Model()
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(_cfg(), model)
    assert all(group["fused"] for group in optimizer.param_groups)
    groups = [dict(g, params=[dict(reference.named_parameters())[n] for n, p in model.named_parameters()
                              if any(p is q for q in g["params"])]) for g in optimizer.param_groups]
    plain = torch.optim.AdamW([{k: v for k, v in g.items() if k != "fused"} for g in groups], lr=1e-4)
    for _ in range(3):
        for m, opt in ((model, optimizer), (reference, plain)):
            opt.zero_grad()
            sum((p * p).sum() for p in m.parameters() if p.requires_grad).backward()
            opt.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7), name
