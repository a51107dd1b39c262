#!/usr/bin/env python
"""PQ, SQ and RQ of semantic segmentation predictions.

    python tools/evaluate_pq_for_semantic_segmentation.py --dataset-name NAME \\
        --json-file output/inference/sem_seg_predictions.json [--output FILE]

--json-file is the sem_seg_predictions.json that SemSegEvaluator writes for the registered
dataset NAME. In every image each class present is one segment (ground truth and prediction
alike), the ignore label is void, and PQ is the panoptic one (see
mask2former/evaluation/semantic_pq.py). --output writes the metrics as json. Exit status 1,
with one line naming the file or dataset, for unusable inputs.
"""
import argparse
import sys

from detectron2.data import DatasetCatalog

import mask2former  # noqa: F401  (registers the built-in datasets)
from mask2former.evaluation.metrics_report import report_metrics
from mask2former.evaluation.semantic_pq import semantic_pq, semantic_results_json_loader
from mask2former.utils.errors import run_reporting_errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-name", required=True, help="a registered semantic segmentation dataset")
    parser.add_argument("--json-file", required=True, metavar="FILE", help="sem_seg_predictions.json")
    parser.add_argument("--output", metavar="FILE", help="write the metrics as json")
    args = parser.parse_args(argv)
    if args.dataset_name not in DatasetCatalog.list():
        raise ValueError(f"--dataset-name: no registered dataset '{args.dataset_name}'")

    load_prediction = semantic_results_json_loader(args.json_file, args.dataset_name)
    report_metrics(semantic_pq(args.dataset_name, load_prediction)["semantic_pq"], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
