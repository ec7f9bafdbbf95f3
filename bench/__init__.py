"""aegan-bench: a benchmark suite for autoencoder-GAN hybrids."""

__version__ = "0.1.0"
