"""COCO-style instance AP for datasets whose thing ids are a subset of all class ids."""
import inspect
import itertools
import os

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

from ..data.datasets.coco_instances import drop_invalid_polygons
from ..utils.file_io import atomic_write_json

__all__ = ["ValidatedCOCOEvaluator", "InstanceSegEvaluator"]


def _cocoeval_choice(use_fast_impl: bool) -> dict:
    """The keyword that picks detectron2's C++ COCOeval or pycocotools' one: detectron2 v0.6
    takes `use_fast_impl`, later versions take the class as `cocoeval_fn`."""
    if "cocoeval_fn" in inspect.signature(_evaluate_predictions_on_coco).parameters:
        from pycocotools.cocoeval import COCOeval

        if not use_fast_impl:
            return {"cocoeval_fn": COCOeval}
        from detectron2.evaluation.fast_eval_api import COCOeval_opt

        return {"cocoeval_fn": COCOeval_opt}
    return {"use_fast_impl": use_fast_impl}


class ValidatedCOCOEvaluator(COCOEvaluator):
    """`COCOEvaluator` whose ground truth loses the polygons that training drops too (fewer
    than 3 points, zero area, non-finite: see `drop_invalid_polygons`), on which
    pycocotools would fail in the middle of the evaluation."""

    def __init__(self, dataset_name, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        coco_api = getattr(self, "_coco_api", None)
        if coco_api is not None and "annotations" in coco_api.dataset:
            annotations = coco_api.dataset["annotations"]
            kept = drop_invalid_polygons(annotations, self._metadata.get("json_file", dataset_name))
            if len(kept) != len(annotations) or any(a is not b for a, b in zip(kept, annotations)):
                coco_api.dataset["annotations"] = kept
                coco_api.createIndex()


class InstanceSegEvaluator(ValidatedCOCOEvaluator):
    """COCO mask (and box) AP where ``thing_dataset_id_to_contiguous_id`` maps dataset ids
    to contiguous ids that need not be ``0..num_things-1``.

    ADE20K and Mapillary Vistas panoptic datasets number every class (things and stuff)
    contiguously, so their thing classes have scattered contiguous ids; detectron2's
    COCOEvaluator insists on ``0..N-1``. Here a prediction is mapped back through the
    inverse of that dictionary, and a class outside it is an error naming the dataset.
    Predictions are stored as RLE per image (see ``COCOEvaluator.process``).
    """

    def _results_with_dataset_ids(self, predictions):
        """The stored per-image predictions as one COCO results list with dataset class ids."""
        coco_results = list(itertools.chain(*[p["instances"] for p in predictions]))
        dataset_id_to_contiguous_id = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if dataset_id_to_contiguous_id is None:
            return coco_results
        contiguous_to_dataset_id = {v: k for k, v in dataset_id_to_contiguous_id.items()}
        unknown = {r["category_id"] for r in coco_results} - set(contiguous_to_dataset_id)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: predictions have classes {sorted(unknown)}, which are not "
                f"thing classes of dataset '{self._metadata.name}' "
                f"(thing classes: {sorted(contiguous_to_dataset_id)})"
            )
        # new dicts: the stored predictions keep contiguous ids, so evaluate() can run again
        return [dict(r, category_id=contiguous_to_dataset_id[r["category_id"]]) for r in coco_results]

    def _eval_predictions(self, predictions, img_ids=None):
        coco_results = self._results_with_dataset_ids(predictions)
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            atomic_write_json(file_path, coco_results)

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        for task in sorted(tasks):
            coco_eval = (
                _evaluate_predictions_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    **_cocoeval_choice(self._use_fast_impl),
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if len(coco_results) > 0
                else None  # the COCO API cannot evaluate an empty result list
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )
