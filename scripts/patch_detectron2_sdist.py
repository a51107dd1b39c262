"""Make the pb1-detectron2 0.6 sdist installable without its (absent) C++ sources.

The sdist ships detectron2's Python code but not `detectron2/layers/csrc`, so its
`setup.py` cannot build the `detectron2._C` extension. This empties the extension
list; `install_detectron2_placeholder_ops.py` then provides a stand-in `_C`.
"""
import re
import sys
from pathlib import Path


def main(src_dir: str) -> None:
    setup_py = Path(src_dir) / "setup.py"
    text = setup_py.read_text()
    patched, n = re.subn(r"ext_modules\s*=\s*get_extensions\(\)", "ext_modules=[]", text)
    if n != 1:
        sys.exit(f"{setup_py}: expected one 'ext_modules=get_extensions()' to patch, found {n}")
    setup_py.write_text(patched)
    print(f"patched {setup_py}: no C++ extension will be built")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: patch_detectron2_sdist.py SDIST_SOURCE_DIR")
    main(sys.argv[1])
