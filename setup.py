from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="fashion_tf",
    version="0.1.0",
    description="iMaterialist-style JSON of image URLs -> trained multi-label Keras classifier with F1-optimal thresholds",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["fashion_tf", "fashion_tf.*"]),
    install_requires=[
        "numpy>=1.26",
        "tensorflow>=2.16,<2.22",
        "keras>=3.3",
        "tensorflow-datasets>=4.9.4",
        "pandas>=2.0",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "tqdm>=4.66",
        "tensorboard>=2.16",
        "requests>=2.31",
        "pycurl>=7.45.3",  # the downloader's HTTP (libcurl multi; manylinux, macOS and Windows wheels)
        "Pillow>=10.0",
        "iterative-stratification>=0.1.9",
        "ijson>=3.2",
        "google-crc32c>=1.5",  # TFRecord checksums for shard writing without TensorFlow (fashion_tf.tfrecord)
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.2"],
        # --engine beam (download and sharding as Beam pipelines); the tfrecord extra writes TFRecords on workers
        "beam": ["apache-beam[tfrecord]>=2.60"],
        "gpu": ["tensorflow[and-cuda]>=2.16,<2.22"],
        "app": ["streamlit>=1.40,<2", "selenium>=4.20,<5"],  # fashion_tf.app, and its browser tests
        "sweep": ["optuna>=5.0,<6"],  # python -m fashion_tf.sweep (uses Optuna 5 storage and heartbeat APIs)
    },
)
