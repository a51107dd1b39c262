"""Video evaluation: YouTube-VIS AP/AR and the official results file."""

from .ytvis_evaluation import YTVISEvaluator, video_predictions_to_results, ytvis_ground_truth
from .ytvis_metrics import evaluate_tracks, track_area, track_iou, track_rles

__all__ = [
    "YTVISEvaluator",
    "video_predictions_to_results",
    "ytvis_ground_truth",
    "evaluate_tracks",
    "track_area",
    "track_iou",
    "track_rles",
]
