"""Give a detectron2 installed without its C++ extension a stand-in `detectron2._C`.

detectron2 imports `_C` at module level in a few places (deformable conv, rotated
boxes, the fast COCO evaluation); without it even `import detectron2.layers`
fails. The stand-in imports cleanly, reports "not built" to `collect_env_info()`,
and raises a clear error naming the op when one of the C++ ops is called.
A detectron2 that has a real compiled `_C` is left untouched.
"""
import importlib.util
import sys
from pathlib import Path

PLACEHOLDER_MARK = "mask2former placeholder for detectron2._C"

PLACEHOLDER_SOURCE = f'''"""{PLACEHOLDER_MARK}.

This detectron2 was installed from Python sources only; its C++/CUDA ops were not
compiled. Mask2Former does not need them: they serve rotated boxes, deformable
convolution and the fast COCO evaluation (use COCOEvaluator(use_fast_impl=False)).
"""

BUILT = False
_REASON = (
    "detectron2 was installed without its compiled C++ extension (detectron2._C is a "
    "placeholder), so the C++ op '{{name}}' is unavailable. It is only used by rotated "
    "boxes, deformable convolution and the fast COCO evaluation; for COCO evaluation pass "
    "use_fast_impl=False. To get the ops, install a full detectron2 build instead."
)


class DetectronOpNotBuiltError(RuntimeError):
    pass


def _missing(name):
    def op(*args, **kwargs):
        raise DetectronOpNotBuiltError(_REASON.format(name=name))

    op.__name__ = name
    return op


def get_compiler_version():
    return "not built"


def get_cuda_version():
    return "not built"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing(name)


def _register_torch_ops():
    # detectron2 calls rotated NMS through the dispatcher (torch.ops.detectron2),
    # which a real build registers; register the same schema so the call fails clearly.
    import torch

    if hasattr(torch.ops.detectron2, "nms_rotated"):
        return
    global _LIBRARY
    _LIBRARY = torch.library.Library("detectron2", "DEF")
    _LIBRARY.define("nms_rotated(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.impl("nms_rotated", _missing("nms_rotated"), "CompositeExplicitAutograd")


_register_torch_ops()
'''


def main() -> None:
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("detectron2 is not installed in this environment")
    package_dir = Path(list(spec.submodule_search_locations)[0])
    compiled = [p for p in package_dir.glob("_C*") if p.suffix in (".so", ".pyd")]
    if compiled:
        print(f"detectron2 has its compiled ops ({compiled[0].name}); nothing to do")
        return
    target = package_dir / "_C.py"
    if target.exists() and PLACEHOLDER_MARK not in target.read_text():
        sys.exit(f"{target} exists and is not this project's placeholder; leaving it alone")
    target.write_text(PLACEHOLDER_SOURCE)
    print(f"wrote placeholder {target}")


if __name__ == "__main__":
    main()
