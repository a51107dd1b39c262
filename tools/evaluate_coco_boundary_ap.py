#!/usr/bin/env python
"""COCO-style Boundary AP of instance segmentation results.

    python tools/evaluate_coco_boundary_ap.py --gt-json instances_val.json \\
        --dt-json output/inference/coco_instances_results.json [--dilation-ratio 0.02] [--output FILE]

Mask AP with min(mask IoU, boundary IoU) as the matching IoU (Cheng et al., CVPR 2021;
see mask2former/evaluation/boundary_iou.py): AP, AP50, AP75, APs, APm, APl. --output writes
them as json. Exit status 1, with one line naming the file, for unusable inputs.
"""
import argparse
import sys


from mask2former.evaluation.boundary_iou import boundary_ap_from_files
from mask2former.evaluation.metrics_report import report_metrics
from mask2former.utils.errors import run_reporting_errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt-json", required=True, metavar="FILE", help="COCO instance annotations")
    parser.add_argument("--dt-json", required=True, metavar="FILE", help="COCO instance results")
    parser.add_argument("--dilation-ratio", type=float, default=0.02, help="boundary width / image diagonal")
    parser.add_argument("--output", metavar="FILE", help="write the metrics as json")
    args = parser.parse_args(argv)
    if not args.dilation_ratio > 0:
        parser.error(f"--dilation-ratio must be positive, got {args.dilation_ratio}")

    report_metrics(boundary_ap_from_files(args.gt_json, args.dt_json, args.dilation_ratio), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
