"""End to end: a tiny Mask2Former (published COCO panoptic config shrunk by overrides)
overfits two 64x64 images, then reproduces them at inference."""
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

from maskformer_standins import tiny_cfg

COLOURS = {0: (220, 30, 30), 1: (30, 220, 30), 2: (30, 30, 220)}
# (y0, x0, y1, x1, class) per image
SCENES = [
    [(8, 8, 32, 32, 0), (32, 8, 56, 40, 1), (8, 40, 48, 56, 2)],
    [(8, 24, 40, 56, 1), (40, 8, 56, 32, 0)],
]


def scene(boxes, size=64):
    image = torch.full((3, size, size), 40, dtype=torch.uint8)
    masks, classes = [], []
    for y0, x0, y1, x1, c in boxes:
        mask = torch.zeros(size, size, dtype=torch.bool)
        mask[y0:y1, x0:x1] = True
        image[:, mask] = torch.tensor(COLOURS[c], dtype=torch.uint8)[:, None]
        masks.append(mask)
        classes.append(c)
    instances = Instances((size, size))
    instances.gt_classes = torch.tensor(classes)
    instances.gt_masks = BitMasks(torch.stack(masks))
    return {"image": image, "instances": instances, "height": size, "width": size}


@pytest.fixture
def one_thread():
    """Two shared cores: one thread avoids OpenMP spinning against other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_model_overfits_two_images(one_thread):
    """170 AdamW steps (~50 s on one core). Measured: the mean loss of the last ten steps
    is ~7.5% of the first step's; afterwards semantic pixel accuracy 1.0 and every object
    recovered by an instance mask with IoU > 0.98."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = build_model(cfg).train()
    batch = [scene(boxes) for boxes in SCENES]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    history = []
    for iteration in range(170):
        losses = model(batch)
        total = sum(losses.values())
        assert torch.isfinite(total), f"loss diverged at iteration {iteration}: {losses}"
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
        if iteration == 110:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
    # point sampling makes single iterations noisy: compare the mean of the last ten
    final = sum(history[-10:]) / 10
    assert final <= 0.1 * history[0], f"loss {history[0]:.2f} -> {final:.2f}"

    model.eval()
    with torch.no_grad():
        outputs = model([{k: v for k, v in inputs.items() if k != "instances"} for inputs in batch])
    for inputs, out in zip(batch, outputs):
        gt = inputs["instances"]
        semantic = out["sem_seg"].argmax(0)
        labelled = gt.gt_masks.tensor.any(0)
        expected = (gt.gt_masks.tensor * (gt.gt_classes[:, None, None] + 1)).sum(0) - 1
        accuracy = (semantic[labelled] == expected[labelled]).float().mean().item()
        assert accuracy > 0.9, f"semantic pixel accuracy {accuracy:.3f}"
        # each object is found by one of the top instance predictions
        inst = out["instances"]
        for mask, cls in zip(gt.gt_masks.tensor, gt.gt_classes):
            same_class = inst.pred_masks[inst.pred_classes == cls]
            inter = (same_class & mask).flatten(1).sum(1).float()
            union = (same_class | mask).flatten(1).sum(1).float()
            assert (inter / union).max() > 0.8, f"class {int(cls)} object not recovered"
