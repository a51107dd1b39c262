"""Make the pb1-detectron2 0.6 sdist installable and compatible with numpy 2 and Pillow >= 10.

1. The sdist ships detectron2's Python code but not `detectron2/layers/csrc`, so its
   `setup.py` cannot build the `detectron2._C` extension. This empties the extension
   list; `install_detectron2_placeholder_ops.py` then provides a stand-in `_C`.
2. detectron2 0.6 uses names that numpy 1.24 (`np.bool`, `np.int`, `np.float`, `np.str`)
   and Pillow 10 (`Image.LINEAR`) removed, and `np.array(..., copy=False)`, which numpy 2
   turned into an error when a copy is needed. Each is rewritten to its current
   equivalent (upstream detectron2 made the same changes after 0.6).

Every substitution is exact and must match the expected number of times: a different
sdist fails loudly instead of being patched blindly. A final scan checks that none of
the removed names is left anywhere in the package.
"""
import re
import sys
from pathlib import Path

# (file, old text, new text, expected occurrences)
SUBSTITUTIONS = [
    ("setup.py", "ext_modules=get_extensions()", "ext_modules=[]", 1),
    # np.bool / np.int / np.float / np.str were the Python builtins under another name.
    ("detectron2/data/build.py", "dtype=np.int)", "dtype=int)", 1),
    ("detectron2/data/build.py", "dtype=np.int\n", "dtype=int\n", 1),
    ("detectron2/data/datasets/pascal_voc.py", "dtype=np.str)", "dtype=str)", 1),
    ("detectron2/evaluation/pascal_voc_evaluation.py", ".astype(np.bool)", ".astype(bool)", 2),
    ("detectron2/evaluation/sem_seg_evaluation.py", "dtype=np.int)", "dtype=int)", 2),
    ("detectron2/evaluation/sem_seg_evaluation.py", "dtype=np.float)", "dtype=float)", 2),
    ("detectron2/evaluation/sem_seg_evaluation.py", ".astype(np.float)", ".astype(float)", 3),
    ("detectron2/structures/masks.py", ".astype(np.bool)", ".astype(bool)", 2),
    ("detectron2/structures/masks.py", "dtype=np.bool)", "dtype=bool)", 1),
    ("detectron2/utils/visualizer.py", ".astype(np.bool)", ".astype(bool)", 3),
    ("detectron2/utils/video_visualizer.py", "dtype=np.bool)", "dtype=bool)", 1),
    # numpy 2: copy=False means "never copy" and raises if a copy is needed.
    ("detectron2/layers/mask_ops.py", "np.array(mask, copy=False)", "np.asarray(mask)", 1),
    # Pillow 10 removed Image.LINEAR, an alias of Image.BILINEAR (a default argument,
    # so `import detectron2.data.transforms` itself failed).
    ("detectron2/data/transforms/transform.py", "interp=Image.LINEAR,", "interp=Image.BILINEAR,", 1),
]

# Names that must not survive in any Python file of the patched package.
REMOVED_NAMES = re.compile(
    r"\bnp\.(bool|int|float|complex|object|str|long|unicode)\b(?!_)"
    r"|\bImage\.(LINEAR|CUBIC|ANTIALIAS)\b"
    r"|\bnp\.(float_|complex_|string_|unicode_|NaN|Inf|infty|product|cumproduct|alltrue|sometrue|asfarray|round_)\b"
    r"|\bnp\.(array|asarray)\([^)]*copy=False"
)


def apply_substitutions(src: Path) -> None:
    for rel, old, new, expected in SUBSTITUTIONS:
        path = src / rel
        if not path.is_file():
            sys.exit(f"{path}: file to patch not found (is this the pb1-detectron2 0.6 sdist?)")
        text = path.read_text()
        found = text.count(old)
        if found != expected:
            sys.exit(f"{path}: expected {expected} x {old!r} to patch, found {found}")
        path.write_text(text.replace(old, new))
        print(f"patched {rel}: {old.strip()!r} -> {new.strip()!r} ({found}x)")


def check_no_removed_names(src: Path) -> None:
    leftovers = []
    for path in sorted((src / "detectron2").rglob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]  # commented-out code cannot fail
            if REMOVED_NAMES.search(code):
                leftovers.append(f"{path.relative_to(src)}:{lineno}: {line.strip()}")
    if leftovers:
        sys.exit("removed numpy/Pillow names left after patching:\n" + "\n".join(leftovers))


def main(src_dir: str) -> None:
    src = Path(src_dir)
    apply_substitutions(src)
    check_no_removed_names(src)
    print(f"patched {src}: no C++ extension will be built; numpy 2 / Pillow >= 10 names in place")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: patch_detectron2_sdist.py SDIST_SOURCE_DIR")
    main(sys.argv[1])
