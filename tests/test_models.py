"""CTA-RNN and baselines: shapes, masks, padding invariance, gradients, learning a separable task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from float_bounds import assert_within, max_abs, network_bound, rounding_bound
from toy_data import toy_utterance

from cta_rnn.attention import ChannelAttention, LayerFusion, TemporalAttention
from cta_rnn.models import CTARNN, RNNMeanPool, WeightedSumPool

VARIANTS = {
    "cta_rnn": lambda: CTARNN(5, 16, 4),
    "feature_gate": lambda: CTARNN(5, 16, 4, feature_gate=True, fusion="weighted", input_proj=8),
    "no_ca_mean": lambda: CTARNN(5, 16, 4, channel_attention=False, fusion="mean"),
    "concat": lambda: CTARNN(5, 16, 4, fusion="concat", input_proj=8, temporal_pool=2),
    "input_mean": lambda: CTARNN(5, 16, 4, fusion="concat", input_mean=True),
    "no_ta": lambda: CTARNN(5, 16, 4, pooling="mean"),
    "no_rnn": lambda: CTARNN(5, 16, 4, rnn_hidden=0),
    "pool3": lambda: CTARNN(5, 16, 4, temporal_pool=3, input_proj=8),
    "rnn_mean_pool": lambda: RNNMeanPool(5, 16, 4),
    "superb": lambda: WeightedSumPool(5, 16, 4),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_and_attention(name: str) -> None:
    torch.manual_seed(0)
    model = VARIANTS[name]().eval()
    x, lengths = torch.randn(3, 5, 20, 16), torch.tensor([1.0, 0.5, 0.25])
    logits, att = model(x, lengths, return_attention=True)
    assert logits.shape == (3, 4)
    assert att["channel"].shape == (3, 5)
    assert att["temporal"].shape == (3, 20)
    # temporal weights are a distribution over the valid frames only: 1 up to the rounding of the softmax's
    # normalising sum and of this sum, each over 20 frames of weights <= 1
    assert_within(att["temporal"].sum(1), torch.ones(3), rounding_bound(1.0, terms=20, depth=2), "sum of weights")
    assert torch.all(att["temporal"][1, 10:] == 0) and torch.all(att["temporal"][2, 5:] == 0)
    assert torch.all(att["temporal"][2, :5] > 0)


@pytest.mark.parametrize("name", VARIANTS)
def test_padding_never_changes_the_prediction(name: str) -> None:
    torch.manual_seed(0)
    model = VARIANTS[name]().eval()
    short = torch.randn(1, 5, 7, 16)
    long = torch.randn(1, 5, 30, 16)
    batch = torch.zeros(2, 5, 30, 16)
    batch[0, :, :7] = short[0]
    batch[0, :, 7:] = 1e3  # garbage in the padding must not leak
    batch[1] = long[0]
    with torch.no_grad():
        alone = model(short, torch.tensor([1.0]))
        padded = model(batch, torch.tensor([7 / 30, 1.0]))
        long_alone = model(long, torch.tensor([1.0]))
    # the same logits up to float32 rounding (another batch shape: other kernel blockings); leaking 1e3s would not be
    bound = network_bound(model, magnitude=max(max_abs(alone), max_abs(long_alone)), outside=30, steps=30)
    assert_within(padded[0], alone[0], bound, f"{name}: padded short clip")
    assert_within(padded[1], long_alone[0], bound, f"{name}: batched long clip")


@pytest.mark.parametrize("name", VARIANTS)
def test_gradient_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = VARIANTS[name]().train()
    logits = model(torch.randn(4, 5, 12, 16), torch.tensor([1.0, 0.8, 0.5, 0.3]))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


def test_blocks_ignore_masked_frames() -> None:
    torch.manual_seed(0)
    ca, ta = ChannelAttention(4, 8, feature_gate=True), TemporalAttention(8)
    x = torch.randn(1, 4, 10, 8)
    mask = torch.arange(10)[None] < 6
    y = x.clone()
    y[:, :, 6:] = -50.0
    assert torch.equal(ca(x, mask)[1], ca(y, mask)[1])  # one machine, same shapes: masked values never reach a sum
    h = torch.randn(1, 10, 8)
    h2 = h.clone()
    h2[:, 6:] = 99.0
    pooled, w = ta(h, mask)
    pooled2, w2 = ta(h2, mask)
    assert torch.equal(pooled, pooled2) and torch.all(w[0, 6:] == 0)  # as above: exact


def test_concat_fusion_puts_the_gated_layers_side_by_side() -> None:
    x = torch.randn(2, 3, 7, 4)
    gate = torch.rand(2, 3)
    out = LayerFusion(3, "concat")(x, gate)
    assert out.shape == (2, 7, 12)
    for k in range(3):
        assert torch.equal(out[:, :, 4 * k : 4 * (k + 1)], x[:, k] * gate[:, k, None, None])


def test_rnn_mean_pool_takes_only_the_values_it_fixes() -> None:
    assert RNNMeanPool(5, 16, 4, fusion="mean").fusion.mode == "mean"
    with pytest.raises(TypeError, match=r"RNNMeanPool fixes \['fusion'\]"):
        RNNMeanPool(5, 16, 4, fusion="concat")


def test_rejects_wrong_input_shape() -> None:
    with pytest.raises(ValueError, match=r"expected \(batch, 5, frames, 16\)"):
        CTARNN(5, 16, 4)(torch.randn(2, 4, 10, 16), torch.ones(2))


def test_learns_a_task_carried_by_one_layer_and_attends_to_it() -> None:
    """Class lives in layer 2 of 4: CTA-RNN reaches > 95% held-out accuracy and gates layer 2 highest."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    layers, dim, signal = 4, 16, 2

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ys = rng.integers(0, 4, n)
        frames = rng.integers(8, 25, n)
        x = torch.zeros(n, layers, 25, dim)
        for i, (y, t) in enumerate(zip(ys, frames)):
            x[i, :, :t] = torch.from_numpy(toy_utterance(int(y), rng, layers, dim, int(t), signal, strength=0.8))
        return x, torch.from_numpy(frames / 25).float(), torch.from_numpy(ys)

    xtr, ltr, ytr = make(256)
    xte, lte, yte = make(128)
    model = CTARNN(
        layers, dim, 4, rnn_hidden=32, attention_hidden=16, classifier_hidden=32, dropout=0.1, normalization="none"
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        model.train()
        perm = torch.randperm(len(ytr))
        for b in range(0, len(ytr), 32):
            idx = perm[b : b + 32]
            loss = torch.nn.functional.cross_entropy(model(xtr[idx], ltr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        logits, att = model(xte, lte, return_attention=True)
    acc = (logits.argmax(1) == yte).float().mean().item()
    assert acc > 0.95, acc
    mean_gate = att["channel"].mean(0)
    assert mean_gate.argmax().item() == signal, mean_gate
