from setuptools import find_packages, setup

setup(
    name="onnxprune",
    version="0.1.0",
    description="Structured pruning of ONNX models with trainable bottlenecks (AutoBot)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["onnxprune", "onnxprune.*"]),
    install_requires=[
        "torch==2.13.0",
        "onnx>=1.16",
        "onnxruntime-gpu>=1.18; platform_system=='Linux' or platform_system=='Windows'",
        "onnxruntime>=1.18; platform_system=='Darwin'",
        "onnx-graphsurgeon>=0.5",
        "numpy>=1.24",
        "click>=8.1",
        "pillow>=9",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
    entry_points={"console_scripts": ["onnxprune=onnxprune.cli:main"]},
)
