"""Frozen layer-wise encoders behind one interface (see base.LayerwiseEncoder)."""

from cta_rnn.encoders.base import LayerwiseEncoder, select_layers

__all__ = ["LayerwiseEncoder", "select_layers"]
