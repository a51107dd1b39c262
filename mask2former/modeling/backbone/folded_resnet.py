"""Inference of detectron2's ResNets with each batch norm folded into its convolution.

At inference a frozen (or eval-mode) batch norm is a per-channel affine map, so
`norm(conv(x, W))` equals `conv(x, W * s) + b` with `s = gamma / sqrt(var + eps)` and
`b = beta - mean * s`. On CPU the folded convolutions run in channels-last layout through
oneDNN with the ReLU, and in each residual block the shortcut sum and its ReLU, applied
inside the convolution kernel. That removes the separate passes over every activation
(batch norm, ReLU, sum) that took about a quarter of the R50 backbone's time.

`FoldedResNet` reads the backbone's own parameters: the folded weights are cached per
device and dtype and refolded whenever a source tensor changed (tensor version counters),
so loading a checkpoint or a training step needs no extra call. Results equal the module's
forward up to float rounding.
"""
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from torch import Tensor, nn
from torch.nn import functional as F

from mask2former.ops import onednn

__all__ = ["FoldedResNet"]

# Frozen BN, and BN / SyncBN / detectron2's NaiveSyncBatchNorm, which use their running
# statistics in eval mode.
_FOLDABLE_NORMS = (FrozenBatchNorm2d, nn.modules.batchnorm._BatchNorm)


def _stem_convs(stem: nn.Module) -> Optional[List[Conv2d]]:
    """The convolutions of a stem that is `convs -> ReLU each -> 3x3 max pool`, else None."""
    if type(stem) is BasicStem:
        return [stem.conv1]
    if type(stem).__name__ == "DeepLabStem":  # detectron2's DeepLab project
        return [stem.conv1, stem.conv2, stem.conv3]
    return None


def _block_convs(block: nn.Module) -> Optional[List[Conv2d]]:
    """The main-path convolutions of a plain residual block, else None."""
    if type(block) is BottleneckBlock:
        return [block.conv1, block.conv2, block.conv3]
    if type(block) is BasicBlock:
        return [block.conv1, block.conv2]
    return None  # e.g. deformable blocks: not folded


def _is_foldable(conv: nn.Module) -> bool:
    return (
        isinstance(conv, Conv2d)
        and conv.activation is None
        and conv.padding_mode == "zeros"
        and (conv.norm is None or (isinstance(conv.norm, _FOLDABLE_NORMS) and conv.norm.running_mean is not None))
    )


class FoldedResNet:
    """Runs a detectron2 `ResNet` at inference with folded batch norms (see module doc).

    Not an `nn.Module`: it holds no parameters of its own, only a cache of folded copies of
    the backbone's, so the model's state dict is unchanged.
    """

    def __init__(self, backbone: ResNet):
        self.backbone = backbone
        self._cache: Dict[Tuple, Tuple[Tuple, Tensor, Tensor]] = {}

    @classmethod
    def supports(cls, backbone: nn.Module) -> bool:
        """True for a detectron2 `ResNet` made of plain stems and blocks whose convolutions
        have foldable norms, without the classification head."""
        if not isinstance(backbone, ResNet) or backbone.num_classes is not None:
            return False
        convs = _stem_convs(backbone.stem)
        if convs is None:
            return False
        for stage in backbone.stages:
            for block in stage:
                block_convs = _block_convs(block)
                if block_convs is None:
                    return False
                convs += block_convs + ([block.shortcut] if block.shortcut is not None else [])
        return all(_is_foldable(conv) for conv in convs)

    def __call__(self, images: Tensor) -> Dict[str, Tensor]:
        """Same as `backbone(images)`, for a backbone in eval mode."""
        if self.backbone.training:
            raise RuntimeError("FoldedResNet runs a backbone in eval mode only (batch norm statistics are folded)")
        fused = onednn.fused_kernels_apply(images)
        x = images.to(onednn.compute_dtype(images))
        if fused:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, enabled=False):
            return self._forward(x, fused)

    def _forward(self, x: Tensor, fused: bool) -> Dict[str, Tensor]:
        backbone = self.backbone
        outputs = {}
        for conv in _stem_convs(backbone.stem):
            x = self._conv(conv, x, fused, relu=True)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        if "stem" in backbone._out_features:
            outputs["stem"] = x
        for name, stage in zip(backbone.stage_names, backbone.stages):
            for block in stage:
                x = self._block(block, x, fused)
            if name in backbone._out_features:
                outputs[name] = x
        return outputs

    def _block(self, block: nn.Module, x: Tensor, fused: bool) -> Tensor:
        *inner, last = _block_convs(block)
        shortcut = x if block.shortcut is None else self._conv(block.shortcut, x, fused, relu=False)
        for conv in inner:
            x = self._conv(conv, x, fused, relu=True)
        return self._conv(last, x, fused, relu=True, residual=shortcut)

    def _conv(self, conv: Conv2d, x: Tensor, fused: bool, relu: bool, residual: Tensor = None) -> Tensor:
        """conv + folded norm [+ residual] [then ReLU]."""
        weight, bias = self._folded(conv, x, channels_last=fused)
        return onednn.conv2d(x, weight, bias, conv, relu=relu, residual=residual)

    def _folded(self, conv: Conv2d, x: Tensor, channels_last: bool) -> Tuple[Tensor, Tensor]:
        """(weight, bias) of `conv` with its norm folded in, in x's device and dtype."""
        sources = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
        norm = conv.norm
        if norm is not None:
            sources += [norm.weight, norm.bias, norm.running_mean, norm.running_var]
        version = tuple((t.data_ptr(), t._version) for t in sources)
        key = (id(conv), x.device, x.dtype, channels_last)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        with torch.no_grad():
            weight = conv.weight.float()
            bias = conv.bias.float() if conv.bias is not None else torch.zeros(weight.shape[0], device=weight.device)
            if norm is not None:
                scale = norm.weight.float() * torch.rsqrt(norm.running_var.float() + norm.eps)
                weight = weight * scale[:, None, None, None]
                bias = (bias - norm.running_mean.float()) * scale + norm.bias.float()
            weight = weight.to(device=x.device, dtype=x.dtype)
            if channels_last:
                weight = weight.contiguous(memory_format=torch.channels_last)
            bias = bias.to(device=x.device, dtype=x.dtype)
        self._cache[key] = (version, weight, bias)
        return weight, bias
