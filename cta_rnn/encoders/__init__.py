"""Frozen layer-wise encoders behind one interface (see base.LayerwiseEncoder); build them with build_encoder."""

from cta_rnn.encoders.base import LayerwiseEncoder, select_layers
from cta_rnn.encoders.factory import build_encoder, load_spec

__all__ = ["LayerwiseEncoder", "build_encoder", "load_spec", "select_layers"]
