"""detectron2's SemSegEvaluator with input checks that name the dataset, file or field."""
import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator as _D2SemSegEvaluator
from detectron2.utils.file_io import PathManager

__all__ = ["SemSegEvaluator", "check_semantic_dataset", "read_semantic_ground_truth"]


def check_semantic_dataset(dataset_name, user, hint=""):
    """The records of ``dataset_name``, after checking that every one has ``sem_seg_file_name``
    and that its metadata has ``stuff_classes`` and ``ignore_label``; errors name ``user``
    (the evaluator or metric that needs them) and end with ``hint``."""
    records = DatasetCatalog.get(dataset_name)
    missing = [r.get("file_name", "<no file_name>") for r in records if "sem_seg_file_name" not in r]
    if missing:
        raise ValueError(
            f"{user} needs 'sem_seg_file_name' in every record of dataset '{dataset_name}', but "
            f"{len(missing)} of {len(records)} records lack it (first: {missing[0]}).{hint}"
        )
    meta = MetadataCatalog.get(dataset_name)
    for field in ("stuff_classes", "ignore_label"):
        if not hasattr(meta, field):
            raise ValueError(f"{user}: metadata of dataset '{dataset_name}' has no '{field}'")
    return records


def read_semantic_ground_truth(gt_file, num_classes, ignore_label, user):
    """The (H, W) int64 labels of ``gt_file``; a label outside ``[0, num_classes)`` other than
    ``ignore_label`` is an error naming the file."""
    with PathManager.open(gt_file, "rb") as f:
        gt = np.array(Image.open(f), dtype=np.int64)
    bad = (gt != ignore_label) & ((gt < 0) | (gt >= num_classes))
    if bad.any():
        raise ValueError(
            f"{user}: {gt_file} holds labels outside [0, {num_classes}) and ignore {ignore_label}: "
            f"{sorted(np.unique(gt[bad]).tolist())[:10]}"
        )
    return gt


class SemSegEvaluator(_D2SemSegEvaluator):
    """Semantic segmentation metrics (mIoU, fwIoU, mACC, pACC), as detectron2's evaluator.

    Differences: a dataset without ``sem_seg_file_name`` in its records, metadata without
    ``stuff_classes``/``ignore_label``, a prediction whose size differs from its ground truth
    or a ground-truth label outside the classes raise an error naming the culprit instead of
    failing obscurely (or silently counting wrong pixels). Memory per image stays bounded:
    the confusion matrix is accumulated and per-class masks are kept as RLE.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None):
        check_semantic_dataset(
            dataset_name,
            "SemSegEvaluator",
            hint=" Register the dataset with semantic ground truth, or turn "
            "MODEL.MASK_FORMER.TEST.SEMANTIC_ON off for it.",
        )
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir)
        # Later detectron2 versions also report boundary IoU from a matrix that `process`
        # here does not fill: keep the metrics to those of v0.6.
        self._compute_boundary_iou = False

    def process(self, inputs, outputs):
        """
        Args:
            inputs: list of dicts with "file_name".
            outputs: list of dicts with "sem_seg" (K, H, W) scores at the ground truth's size.
        """
        for input, output in zip(inputs, outputs):
            file_name = input["file_name"]
            if file_name not in self.input_file_to_gt_file:
                raise KeyError(f"SemSegEvaluator: {file_name} is not an image of dataset '{self._dataset_name}'")
            scores = output["sem_seg"]
            if scores.dim() != 3 or scores.shape[0] != self._num_classes:
                raise ValueError(
                    f"SemSegEvaluator: 'sem_seg' for {file_name} has shape {tuple(scores.shape)}, "
                    f"expected ({self._num_classes}, H, W)"
                )
            pred = scores.argmax(dim=0).to(self._cpu_device).numpy().astype(np.int64)
            gt_file = self.input_file_to_gt_file[file_name]
            gt = read_semantic_ground_truth(gt_file, self._num_classes, self._ignore_label, "SemSegEvaluator")
            if gt.shape != pred.shape:
                raise ValueError(
                    f"SemSegEvaluator: prediction for {file_name} is {pred.shape}, "
                    f"but its ground truth {gt_file} is {gt.shape}"
                )
            gt[gt == self._ignore_label] = self._num_classes
            self._conf_matrix += np.bincount(
                (self._num_classes + 1) * pred.reshape(-1) + gt.reshape(-1),
                minlength=self._conf_matrix.size,
            ).reshape(self._conf_matrix.shape)
            self._predictions.extend(self.encode_json_sem_seg(pred, file_name))
