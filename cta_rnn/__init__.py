"""CTA-RNN: channel and temporal-wise attention RNN on layer-wise ASR embeddings for SER."""

__version__ = "0.1.0"

EMOTIONS = ("neu", "hap", "ang", "sad")
"""The four classes of the paper's protocol (excited merged into happy)."""
