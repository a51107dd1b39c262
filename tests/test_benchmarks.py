"""The benchmark scripts run end to end on the tiny config (their numbers are not checked:
no timing assertions)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = "configs/quickstart/panoptic_R18_synthetic_test.yaml"


def run_script(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True, timeout=300
    ).stdout


def test_bench_inference_prints_every_stage():
    out = run_script(
        "benchmarks/bench_inference.py", "--config-file", TINY, "--size", "64", "96",
        "--repeats", "1", "--rounds", "1", "--dtype", "bfloat16",
    )
    for stage in ("backbone", "pixel_decoder", "transformer_decoder", "postprocessing", "total"):
        assert f"\n{stage} " in out, out
    assert "matmul peak float32" in out and "peak resident memory during the calls" in out
    assert "peak live memory" in out and "min-max s" in out
    # the network stages carry their counted work and its fraction of the peak
    for stage in ("backbone", "pixel_decoder", "transformer_decoder"):
        assert re.search(rf"\n{stage} .*\d%\n", out), out


def test_bench_mask_products_compares_both_products():
    out = run_script(
        "benchmarks/bench_mask_products.py", "--queries", "5", "--channels", "8", "--image-size", "6", "8",
        "--clip-size", "4", "6", "--frames", "3", "--repeats", "1",
    )
    for label in ("image 6x8", "clip 3x4x6"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        assert float(line.split()[-1]) < 1e-4, out  # the two products agree


def test_bench_train_step_prints_every_phase():
    out = run_script(
        "benchmarks/bench_train_step.py", "--config-file", TINY, "--iters", "1", "--rounds", "1",
        "--objects", "6", "SOLVER.IMS_PER_BATCH", "2",
    )
    for phase in ("data", "backbone", "matcher", "criterion", "backward", "optimizer", "total"):
        assert f"\n{phase} " in out, out
