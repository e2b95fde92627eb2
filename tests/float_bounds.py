"""Float tolerances derived from rounding analysis, shared by the tests (see README, "Float tolerances in the tests").

Two float32 evaluations of one computation that differ only in the order of their sums (another CPU's
SIMD width or MKL/oneDNN kernel, the GEMM/convolution blocking a padded batch gets, another thread count)
differ by rounding alone. Model (probabilistic rounding-error analysis, Higham & Mary, SIAM J. Sci. Comput.
41(5), 2019): every operation rounds with a relative error of at most u (``EPS32 = 2**-24``) and random
sign, so the error of a K-term sum is a random walk over its K partial sums, about ``u * sqrt(K)`` times
their size; an error that enters a layer leaves it in proportion to the values, and the errors of
``depth`` chained sums add up. Both evaluations carry such an error, hence a factor 2::

    bound = 2 * u * sqrt(K) * depth * magnitude

``K`` (``longest_reduction``) is the longest sum on the path: a Linear's in_features, a conv's
in_channels/groups x kernel size, a normalised width, an RNN gate's input + hidden, the attention's key
count. ``depth`` (``chained_sums``) counts the sums on the path: every Linear, conv and norm layer, two per
attention (scores, weighted values), one per step of each RNN layer; parallel branches (q, k, v) are
counted as if chained, an over-count that keeps it a bound. ``magnitude`` is the size of the partial sums:
the largest ``|value|`` of the compared tensor where the terms have random signs (a layer's weighted sums
grow like their result), the largest ``|term|`` where they may cancel (a mean of frames).

Measured, such bounds sit 4-1000x above the rounding differences they cover (a padded batch against
single runs, this CPU against the machine that computed the WeNet reference; the counts of ``depth`` make
deep layers the loosest) and 10^2-10^4x below what a bug gives (a padded frame that leaks, a wrong mask
changes values by a fraction of their magnitude): ``test_wenet.py::test_broken_padding_exceeds_the_bound``
checks the latter.
``FLOAT_BOUNDS_REPORT=1 pytest -s`` prints each comparison's margin (observed difference / bound).

Comparisons that are exact by construction stay exact (``torch.equal``): the same computation on the
same machine and shapes (masked values replaced before any sum), integer counts, fractions of integer
counts in float64 (``pytest.approx``'s default).
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

EPS32 = 2.0**-24  # float32 unit roundoff: |fl(a op b) - a op b| <= EPS32 |a op b|
EPS_BF16 = 2.0**-8  # bfloat16 unit roundoff (8 significant bits)


def rounding_bound(magnitude: float, terms: int, depth: int = 1, eps: float = EPS32) -> float:
    """Largest |a - b| between two evaluations of one computation that differ only in rounding (module doc)."""
    assert terms >= 1 and depth >= 1 and magnitude >= 0
    return 2 * eps * math.sqrt(terms) * depth * magnitude


def longest_reduction(*modules: nn.Module, outside: int = 1) -> int:
    """The longest sum an output of ``modules`` accumulates (``outside``: the longest one done outside their
    layers: attention keys, pooled frames, an FFT's length)."""
    k = outside
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Linear):
                k = max(k, m.in_features)
            elif isinstance(m, nn.modules.conv._ConvNd):
                k = max(k, m.in_channels // m.groups * math.prod(m.kernel_size))
            elif isinstance(m, nn.LayerNorm):
                k = max(k, math.prod(m.normalized_shape))
            elif isinstance(m, nn.RNNBase):
                k = max(k, max(m.input_size, m.hidden_size * (1 + m.bidirectional)) + m.hidden_size)
    return k


def chained_sums(*modules: nn.Module, steps: int = 0) -> int:
    """Sums chained on a path through ``modules``: Linear/conv/norm layers, 2 per attention, ``steps`` per RNN layer."""
    n = 0
    for module in modules:
        for m in module.modules():
            name = type(m).__name__
            if isinstance(m, nn.Linear | nn.modules.conv._ConvNd | nn.LayerNorm | nn.GroupNorm) or name == "RMSNorm":
                n += 1
            elif isinstance(m, nn.RNNBase):
                n += m.num_layers * steps
            elif name.endswith("Attention"):
                n += 2
    return max(n, 1)


def network_bound(
    *modules: nn.Module, magnitude: float, outside: int = 1, steps: int = 0, extra_depth: int = 0, eps: float = EPS32
) -> float:
    """``rounding_bound`` of the path through ``modules`` (``extra_depth``: chained sums outside them)."""
    terms = longest_reduction(*modules, outside=outside)
    return rounding_bound(magnitude, terms, chained_sums(*modules, steps=steps) + extra_depth, eps)


def float16_step(x: torch.Tensor) -> torch.Tensor:
    """Spacing of float16 values at |x| (2**-10 |x|, 2**-24 among subnormals): two float32 values that differ
    by rounding may be stored as adjacent float16 values, this much apart on top of their own difference."""
    return torch.clamp(2.0**-10 * x.detach().double().abs(), min=2.0**-24)


def whisper_path(enc, k: int) -> list[nn.Module]:
    """Modules from the log-mel to layer k of a ``WhisperLayerwiseEncoder``: conv1, conv2, the first k blocks,
    and the final layer norm for the last layer."""
    model = enc.encoder
    return [model.conv1, model.conv2, *model.layers[:k]] + ([model.layer_norm] if k == len(model.layers) else [])


def whisper_layer_bounds(enc, hidden: torch.Tensor, keys: int, extra_depth: int = 0) -> list[float]:
    """``network_bound`` of each selected layer of a ``WhisperLayerwiseEncoder`` (``hidden``: (L, T, D)).

    ``keys``: attended frames; ``extra_depth``: sums before the encoder (2 when the log-mel, an STFT and a
    mel sum, may round differently too).
    """
    return [
        network_bound(*whisper_path(enc, k), magnitude=max_abs(hidden[j]), outside=keys, extra_depth=extra_depth)
        for j, k in enumerate(enc.layers)
    ]


def log_power_bound(
    value: torch.Tensor,
    bin_energy: torch.Tensor,
    frame_energy: torch.Tensor,
    n_fft: int,
    mel_terms: int,
    weight_max: float = 1.0,
    log_scale: float = 1.0,
) -> torch.Tensor:
    """Bound on |a - b| per (frame, mel bin) of a log-mel feature computed by two float32 FFT paths.

    ``value``: the feature, ``log_scale`` * log(``bin_energy``) + const; ``frame_energy``: ||X||^2 of the
    frame's whole spectrum (broadcastable). One evaluation's error: the log's rounding and the affine
    rescaling after it (2 u |value|); the mel sum of ``mel_terms`` power bins (u sqrt(mel_terms), relative
    in the energy); the FFT, whose error is relative to the whole frame (Higham, Accuracy and Stability of
    Numerical Algorithms, Thm. 24.2: ||dX|| <= log2(N) eta ||X||, eta = (1 + 4 sqrt 2) u) and reaches a mel
    bin of energy e as |de| <= 2 sqrt(w_max e) ||dX|| (Cauchy-Schwarz; w_max: the largest filter weight),
    i.e. 2 log2(N) eta sqrt(w_max ||X||^2 / e) relative: quiet bins of loud frames get the largest errors.
    The log turns relative errors of e into absolute ones (x ``log_scale``). Two evaluations: x2.
    """
    eta = (1 + 4 * math.sqrt(2)) * EPS32
    ratio_ = (weight_max * frame_energy.double() / bin_energy.double()).sqrt()
    relative = EPS32 * math.sqrt(mel_terms) + 2 * math.log2(n_fft) * eta * ratio_
    return 2 * (2 * EPS32 * value.double().abs() + log_scale * relative)


def max_abs(x: torch.Tensor) -> float:
    """Largest |value| (the ``magnitude`` a bound scales with)."""
    return float(x.detach().abs().max()) if x.numel() else 0.0


def ratio(actual: torch.Tensor, expected: torch.Tensor, bound: float | torch.Tensor) -> float:
    """max(|actual - expected| / bound): <= 1 passes; what the tests report and the broken-mask tests push above 1."""
    diff = (actual.detach().double() - expected.detach().double()).abs()
    scaled = torch.where(diff == 0, 0.0, diff / torch.as_tensor(bound, dtype=torch.float64))  # 0 / 0 counts as 0
    return float(scaled.max()) if diff.numel() else 0.0


def report(line: str) -> None:
    """Print a margin when FLOAT_BOUNDS_REPORT is set (``FLOAT_BOUNDS_REPORT=1 pytest -s``)."""
    if os.environ.get("FLOAT_BOUNDS_REPORT"):
        print(f"[float_bounds] {line}")


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: float | torch.Tensor, what: str = "") -> float:
    """Assert |actual - expected| <= bound elementwise (a float or a broadcastable tensor); return the worst ratio."""
    assert actual.shape == expected.shape, f"{what}: shapes {tuple(actual.shape)} vs {tuple(expected.shape)}"
    r = ratio(actual, expected, bound)
    diff = float((actual.detach().double() - expected.detach().double()).abs().max()) if actual.numel() else 0.0
    report(f"{what}: max |diff| {diff:.3g}, {r:.3g} x bound")
    assert r <= 1.0, f"{what}: max |diff| {diff:.3g} is {r:.3g} x the float32 rounding bound"
    return r
