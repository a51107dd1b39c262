"""Peak memory of video inference: whole-video versus clip by clip (MASK2FORMER.VIDEO.CLIP_LENGTH).

The model is the quickstart size (ResNet-18 backbone, 64-d pixel and transformer decoders,
20 queries, 4 classes: the image quickstart config turned into VideoMaskFormer), randomly
initialised; frames are random 360x640 images. Each run is a fresh process, and its peak
resident memory (ru_maxrss) is reported with the part already held before inference
(libraries, model, the uint8 frames) and the size of the returned results (top-10 masks of
T x H x W bools), which no clip length can shrink. The reference is whole-video inference
measured in the same run; ratio = peak above baseline / the reference's.

    python benchmarks/bench_video_memory.py [--frames 300] [--clip-length 20] [--reference-frames 20 40]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _child(frames, height, width, clip_length, overlap):
    import torch
    from detectron2.modeling import build_model

    from mask2former import add_maskformer2_video_config, build_config

    cfg = build_config(
        str(ROOT / "configs/quickstart/panoptic_R18_synthetic.yaml"),
        [
            "MODEL.META_ARCHITECTURE", "VideoMaskFormer",
            "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "VideoMultiScaleMaskedTransformerDecoder",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 4,
            "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", False,
            "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", False,
            "DATASETS.TRAIN", "[]", "DATASETS.TEST", "[]",
            "MODEL.DEVICE", "cpu",
            "MASK2FORMER.VIDEO.CLIP_LENGTH", clip_length,
            "MASK2FORMER.VIDEO.CLIP_OVERLAP", overlap,
        ],
        extra_configs=[add_maskformer2_video_config],
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    video = [torch.randint(0, 256, (3, height, width), dtype=torch.uint8) for _ in range(frames)]
    baseline = _rss_mb()
    start = time.perf_counter()
    with torch.inference_mode():
        result = model([{"image": video, "height": height, "width": width}])
    seconds = time.perf_counter() - start
    result_mb = sum(m.numel() * m.element_size() for m in result["pred_masks"]) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak, "result_mb": result_mb, "seconds": seconds}))


def _run(frames, height, width, clip_length, overlap):
    command = [sys.executable, __file__, "--child", str(frames), str(height), str(width), str(clip_length), str(overlap)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--clip-length", type=int, default=20)
    parser.add_argument("--overlap", type=int, default=1)
    parser.add_argument("--reference-frames", type=int, nargs="+", default=[20, 40])
    args = parser.parse_args()

    runs = [(f"whole video, {n} frames", n, 0) for n in args.reference_frames]
    runs.append((f"clips of {args.clip_length}, {args.frames} frames", args.frames, args.clip_length))
    print(f"{'run':32s} {'peak MB':>9s} {'baseline':>9s} {'results':>9s} {'above base':>10s} {'ratio':>6s} {'s':>6s}")
    reference = None
    for name, frames, clip_length in runs:
        r = _run(frames, args.height, args.width, clip_length, args.overlap)
        above = r["peak_mb"] - r["baseline_mb"]
        reference = reference or above
        print(
            f"{name:32s} {r['peak_mb']:9.0f} {r['baseline_mb']:9.0f} {r['result_mb']:9.0f} "
            f"{above:10.0f} {above / reference:6.2f} {r['seconds']:6.1f}",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*(int(v) for v in sys.argv[2:7]))
    else:
        main()
