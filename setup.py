"""Installs the `mask2former` package and builds its multi-scale deformable attention op.

The op is compiled as the extension `mask2former._C` from `mask2former/ops/csrc`: always the
CPU kernel, and the CUDA kernel too when a GPU is visible or FORCE_CUDA=1 (nvcc needed then).
Without the extension the package still works, with a pure-PyTorch fallback: set
MASK2FORMER_SKIP_EXTENSION=1 to install without a C++ compiler.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

OPS_CSRC = os.path.join("mask2former", "ops", "csrc")


def _op_extensions():
    """(ext_modules, cmdclass, install_requires) for the compiled op, or nothing when it must
    not be built."""
    if os.environ.get("MASK2FORMER_SKIP_EXTENSION", "0") == "1":
        return [], {}, ["torch"]
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = sorted(glob.glob(os.path.join(OPS_CSRC, "*.cpp")) + glob.glob(os.path.join(OPS_CSRC, "cpu", "*.cpp")))
    # -fopenmp: ATen's parallel_for runs its OpenMP loop inline in our code; without the flag
    # it would silently run on one thread. (Linux only: Apple's clang has no -fopenmp.)
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    extra_compile_args = {"cxx": ["-O3"] + openmp}
    extension = CppExtension
    with_cuda = os.environ.get("FORCE_CUDA", "0") == "1" or (torch.cuda.is_available() and CUDA_HOME is not None)
    if with_cuda:
        extension = CUDAExtension
        sources += sorted(glob.glob(os.path.join(OPS_CSRC, "cuda", "*.cu")))
        extra_compile_args["nvcc"] = ["-O3"]
    ext = extension(
        "mask2former._C",
        sources,
        extra_compile_args=extra_compile_args,
        extra_link_args=openmp,
    )
    # The compiled op links against this torch's C++ ABI: a wheel with it needs the same torch.
    torch_release = torch.__version__.split("+")[0]
    return [ext], {"build_ext": BuildExtension}, [f"torch=={torch_release}"]


ext_modules, cmdclass, torch_requirement = _op_extensions()


def _requirements(path):
    with open(path) as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


setup(
    name="mask2former",
    version="0.1.0",
    description="Mask2Former (masked-attention mask transformer) as a detectron2 extension",
    packages=find_packages(include=["mask2former", "mask2former.*"]),
    python_requires=">=3.9",
    # detectron2 (not on PyPI under that name) brings numpy, Pillow, opencv, pycocotools and
    # fvcore; panopticapi is installed beside it (panopticapi-lite declares numpy<2 but runs on 2).
    install_requires=torch_requirement + ["scipy"],
    extras_require={"deploy": _requirements("requirements-deploy.txt")},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
