"""Shape, mask and gradient tests for recsys.modules (tiny tensors: the whole file runs in seconds)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.modules import (
    FUSIONS,
    MLP,
    SEQUENCE_ENCODERS,
    AttentionGRU,
    ConcatFusion,
    GradientReversal,
    MeanFusion,
    ModalAttentionFusion,
    ModalityDiscriminator,
    TargetAttention,
    build_fusion,
    build_sequence_encoder,
    d0_sample_weights,
    grad_reverse,
    masked_attention_weights,
    modality_targets,
    normalize_present_weights,
    stack_modalities,
)

FAST = settings(max_examples=12, deadline=None)
small = st.integers(min_value=1, max_value=4)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _mask(b: int, m: int) -> torch.Tensor:
    """A (b, m) mask with every pattern we care about: all present, some absent, none present."""
    mask = torch.rand(b, m) > 0.4
    mask[0] = True
    if b > 1:
        mask[1] = False
    return mask


def _poison(x: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    """x with every masked-out slot (mask False) set to `value`."""
    return torch.where(mask.unsqueeze(-1), x, torch.full_like(x, value))


# --------------------------------------------------------------------------- MLP


@FAST
@given(b=small, in_dim=small, hidden=st.lists(small, max_size=3), out_dim=st.one_of(st.none(), small))
def test_mlp_shapes(b: int, in_dim: int, hidden: list[int], out_dim: int | None) -> None:
    mlp = MLP(in_dim, hidden, out_dim)
    expected = out_dim if out_dim is not None else (hidden[-1] if hidden else in_dim)
    assert mlp.out_dim == expected
    assert mlp(torch.randn(b, in_dim)).shape == (b, expected)
    assert mlp(torch.randn(b, 3, in_dim)).shape == (b, 3, expected)  # leading dims kept


def test_mlp_batch_norm_dropout_and_activation_names() -> None:
    mlp = MLP(4, [8, 8], 2, dropout=0.5, activation="prelu", batch_norm=True)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in mlp.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in mlp.modules())
    assert mlp(torch.randn(5, 3, 4)).shape == (5, 3, 2)  # BatchNorm over folded leading dims
    mlp.eval()
    x = torch.randn(3, 4)
    assert torch.equal(mlp(x), mlp(x))  # eval: dropout off
    with pytest.raises(ValueError, match="valid names"):
        MLP(4, [8], activation="swishy")


# --------------------------------------------------------------------------- gradient reversal


def test_grad_reverse_is_identity_forward_and_flips_gradient() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.5))


def test_gradient_reversal_module_scales_by_lambda() -> None:
    layer = GradientReversal(2.0)
    x = torch.randn(5, requires_grad=True)
    (layer(x) * torch.arange(5.0)).sum().backward()
    assert torch.allclose(x.grad, -2.0 * torch.arange(5.0))
    layer.lambda_ = 0.0  # a schedule may switch the adversary off
    x.grad = None
    layer(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros(5))


def test_gradient_reversal_makes_encoder_ascend_discriminator_loss() -> None:
    # The min-max game in one backward: the discriminator's grads are untouched, the encoder's flip.
    enc, disc = torch.nn.Linear(3, 3), ModalityDiscriminator(3, 2, hidden=[4])
    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    plain = torch.nn.functional.cross_entropy(disc(enc(x)), y)
    g_enc, g_disc = torch.autograd.grad(plain, [enc.weight, disc.net.layers[0].weight])
    reversed_ = torch.nn.functional.cross_entropy(disc(grad_reverse(enc(x), 1.0)), y)
    r_enc, r_disc = torch.autograd.grad(reversed_, [enc.weight, disc.net.layers[0].weight])
    assert torch.allclose(r_enc, -g_enc)
    assert torch.allclose(r_disc, g_disc)


# --------------------------------------------------------------------------- discriminator + D0 weights


@FAST
@given(b=small, m=st.integers(2, 4), d=small)
def test_discriminator_shapes(b: int, m: int, d: int) -> None:
    disc = ModalityDiscriminator(d, m, hidden=[5])
    assert disc(torch.randn(b, m, d)).shape == (b, m, m)
    assert modality_targets(torch.ones(b, m, dtype=torch.bool)).tolist() == [list(range(m))] * b


def test_discriminator_needs_two_modalities() -> None:
    with pytest.raises(ValueError, match="n_modalities"):
        ModalityDiscriminator(4, 1)


@FAST
@given(b=st.integers(2, 5), m=st.integers(2, 4))
def test_d0_weights_range_masking_and_normalisation(b: int, m: int) -> None:
    mask = _mask(b, m)
    logits = torch.randn(b, m, m, requires_grad=True) * 3
    logits_poisoned = torch.where(mask[..., None], logits, torch.full_like(logits, float("nan")))
    w = d0_sample_weights(logits_poisoned, mask)
    assert w.shape == (b, m)
    assert not w.requires_grad  # constants when weighting
    assert torch.isfinite(w).all()
    assert ((w >= 0) & (w <= 1)).all()
    assert (w[~mask] == 0).all()
    expected = 1 - logits.detach().softmax(-1).diagonal(dim1=-2, dim2=-1)
    assert torch.allclose(w[mask], expected[mask])

    wn = normalize_present_weights(w, mask)
    assert torch.isfinite(wn).all()
    assert (wn[~mask] == 0).all()
    has_any = mask.any(-1)
    assert torch.allclose(wn[has_any].sum(-1), torch.ones(int(has_any.sum())))
    assert (wn[~has_any] == 0).all()  # row 1: no modality present -> zeros, not NaN
    assert (wn[1] == 0).all()


def test_d0_weights_custom_modality_index() -> None:
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0]]])  # slot 0 looks like class 0, slot 1 like class 1
    mask = torch.ones(1, 2, dtype=torch.bool)
    easy = d0_sample_weights(logits, mask)  # true classes = slots: confident -> small weight
    swapped = d0_sample_weights(logits, mask, modality_index=torch.tensor([1, 0]))
    assert (easy < 0.01).all() and (swapped > 0.99).all()


def test_normalised_weights_fall_back_to_uniform_when_all_zero() -> None:
    mask = torch.tensor([[True, True, False]])
    wn = normalize_present_weights(torch.zeros(1, 3), mask)
    assert torch.equal(wn, torch.tensor([[0.5, 0.5, 0.0]]))


# --------------------------------------------------------------------------- fusions


def _fusion(name: str, m: int, d: int) -> torch.nn.Module:
    return build_fusion(name, n_modalities=m, dim=d)


@pytest.mark.parametrize("name", sorted(FUSIONS))
@FAST
@given(b=small, l=st.integers(0, 3), m=small, d=small)
def test_fusion_shapes(name: str, b: int, l: int, m: int, d: int) -> None:
    fusion = _fusion(name, m, d)
    lead = (b, l) if l else (b,)  # candidates (B, M, D) and histories (B, L, M, D)
    out = fusion(torch.randn(*lead, m, d), torch.ones(*lead, m, dtype=torch.bool))
    assert out.fused.shape == (*lead, fusion.out_dim)
    if out.weights is not None:
        assert out.weights.shape[:-1] == (*lead, m) and out.weights.shape[-1] in (1, d)


@pytest.mark.parametrize("name", sorted(FUSIONS))
@pytest.mark.parametrize("poison", [0.0, 123.0, float("nan"), float("inf"), float("-inf")])
def test_fusion_ignores_absent_modalities(name: str, poison: float) -> None:
    b, m, d = 6, 3, 4
    fusion = _fusion(name, m, d)
    x, mask = torch.randn(b, m, d), _mask(b, m)
    ref = fusion(x, mask)
    x_bad = _poison(x, mask, poison).requires_grad_(True)
    out = fusion(x_bad, mask)
    assert torch.equal(out.fused, ref.fused)
    if out.weights is not None:
        assert torch.equal(out.weights, ref.weights)
        assert (out.weights[~mask] == 0).all()
    # No NaN/inf reaches any gradient either (0 * inf in a backward pass would).
    out.fused.sum().backward()
    assert torch.isfinite(x_bad.grad).all() and (x_bad.grad[~mask] == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters())


@pytest.mark.parametrize("name", ["mean", "modal_attention"])
def test_weighted_fusions_are_weighted_sums_and_zero_for_empty_items(name: str) -> None:
    b, m, d = 5, 3, 4
    fusion = _fusion(name, m, d)
    x, mask = torch.randn(b, m, d), _mask(b, m)
    out = fusion(x, mask)
    x_present = _poison(x, mask, 0.0)
    assert torch.allclose(out.fused, (out.weights * x_present).sum(-2), atol=1e-6)
    assert (out.fused[1] == 0).all()  # row 1 has no modality


def test_mean_fusion_is_masked_mean() -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    out = MeanFusion(3, 2)(x, torch.tensor([[True, True, False]]))
    assert torch.equal(out.fused, torch.tensor([[2.0, 3.0]]))


def test_modal_attention_follows_the_paper_formula() -> None:
    b, m, d = 4, 3, 5
    fusion = ModalAttentionFusion(m, d)
    x = torch.randn(b, m, d)
    out = fusion(x, torch.ones(b, m, dtype=torch.bool))
    for k in range(m):  # a_m = tanh(W_m s_m + b_m), element-wise vector weights per modality
        a_k = torch.tanh(x[:, k] @ fusion.weight[k] + fusion.bias[k])
        assert torch.allclose(out.weights[:, k], a_k, atol=1e-6)
    assert torch.allclose(out.fused, (out.weights * x).sum(1), atol=1e-6)


def test_concat_fusion_out_dim() -> None:
    fusion = ConcatFusion(3, 4, out_dim=7)
    assert fusion(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)).fused.shape == (2, 7)


def test_fusion_rejects_wrong_layout() -> None:
    fusion = ModalAttentionFusion(3, 4)
    with pytest.raises(ValueError, match="expected x"):
        fusion(torch.randn(2, 2, 4), torch.ones(2, 2, dtype=torch.bool))


def test_modal_attention_gradients_reach_every_parameter() -> None:
    fusion = ModalAttentionFusion(3, 4)
    x, mask = torch.randn(5, 3, 4), torch.ones(5, 3, dtype=torch.bool)
    fusion(x, mask).fused.square().sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_stack_modalities_orders_and_fills_missing() -> None:
    feats = {"title": torch.ones(2, 3), "image": 2 * torch.ones(2, 3)}
    masks = {"image": torch.tensor([True, False])}
    x, mask = stack_modalities(feats, masks, order=["image", "title", "audio"])
    assert x.shape == (2, 3, 3) and mask.tolist() == [[True, True, False], [False, True, False]]
    assert (x[:, 0] == 2).all() and (x[:, 1] == 1).all() and (x[:, 2] == 0).all()
    with pytest.raises(ValueError, match="not in order"):
        stack_modalities({"image": torch.ones(2, 3), "stats": torch.ones(2, 3)}, {}, order=["image", "title"])
    with pytest.raises(ValueError, match="none of the modalities"):
        stack_modalities({}, {}, order=["image"])


def test_unknown_fusion_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        build_fusion("gated", n_modalities=2, dim=4)
    for valid in ("concat", "mean", "modal_attention"):
        assert valid in str(err.value)


# --------------------------------------------------------------------------- sequence encoders


def _history(b: int, l: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    history, target = torch.randn(b, l, d), torch.randn(b, d)
    mask = torch.rand(b, l) > 0.3
    mask[0] = True  # a full row
    if b > 1:
        mask[1] = False  # a new user: all padding
    if b > 2 and l > 1:
        mask[2] = False
        mask[2, -1] = True  # left padding, newest item last
    return history, mask, target


def _encoder(name: str, dim: int, hidden: list[int]) -> torch.nn.Module:
    """A registered sequence encoder; ``hidden`` (the attention MLP) for those that have one."""
    return (
        build_sequence_encoder(name, dim=dim)
        if name == "mean"
        else build_sequence_encoder(name, dim=dim, hidden=hidden)
    )


@pytest.mark.parametrize("name", sorted(SEQUENCE_ENCODERS))
@FAST
@given(b=small, l=small, d=small)
def test_sequence_encoder_shapes(name: str, b: int, l: int, d: int) -> None:
    encoder = _encoder(name, d, [3])
    history, mask, target = _history(b, l, d)
    assert encoder(history, mask, target).shape == (b, d)
    assert encoder.attention(history, mask, target).shape == (b, l)


@pytest.mark.parametrize("name", sorted(SEQUENCE_ENCODERS))
@pytest.mark.parametrize("poison", [0.0, -7.0, float("nan"), float("inf")])
def test_sequence_encoder_ignores_padding(name: str, poison: float) -> None:
    b, l, d = 5, 4, 3
    encoder = _encoder(name, d, [4])
    history, mask, target = _history(b, l, d)
    ref = encoder(history, mask, target)
    bad = _poison(history, mask, poison).requires_grad_(True)
    out = encoder(bad, mask, target)
    assert torch.equal(out, ref)
    weights = encoder.attention(bad, mask, target)
    assert torch.isfinite(weights).all() and (weights[~mask] == 0).all()
    assert (out[1] == 0).all()  # all-padding history -> zeros, not NaN
    out.sum().backward()
    assert torch.isfinite(bad.grad).all() and (bad.grad[~mask] == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(SEQUENCE_ENCODERS))
@pytest.mark.parametrize("real", [0, 1, 5])
def test_left_padding_length_does_not_change_the_interest(name: str, real: int) -> None:
    """The scoring service feeds only the real history positions (one padded position for none), one
    row broadcast against every candidate: that must equal the padded training layout."""
    b, l, d = 6, 8, 4
    torch.manual_seed(real)
    encoder = _encoder(name, d, [5]).eval()
    items, target = torch.randn(max(real, 1), d), torch.randn(b, d)
    padded = torch.zeros(b, l, d)
    padded_mask = torch.zeros(b, l, dtype=torch.bool)
    if real:
        padded[:, l - real :], padded_mask[:, l - real :] = items, True
    trimmed = items[None]  # (1, max(real, 1), D): one user's history for every target
    trimmed_mask = torch.full((1, max(real, 1)), bool(real))
    with torch.inference_mode():
        torch.testing.assert_close(
            encoder(trimmed, trimmed_mask, target), encoder(padded, padded_mask, target), rtol=1e-5, atol=1e-6
        )


def test_target_attention_softmax_sums_to_one_and_sigmoid_does_not_normalise() -> None:
    history, mask, target = _history(4, 5, 3)
    w = TargetAttention(3, hidden=[4]).attention(history, mask, target)
    has_any = mask.any(-1)
    assert torch.allclose(w[has_any].sum(-1), torch.ones(int(has_any.sum())))
    w_sig = TargetAttention(3, hidden=[4], weighting="sigmoid").attention(history, mask, target)
    assert ((w_sig[mask] > 0) & (w_sig[mask] < 1)).all() and (w_sig[~mask] == 0).all()


def test_target_attention_is_weighted_sum_of_history() -> None:
    history, mask, target = _history(3, 4, 2)
    encoder = TargetAttention(2, hidden=[4])
    w = encoder.attention(history, mask, target)
    expected = (w.unsqueeze(-1) * _poison(history, mask, 0.0)).sum(1)
    assert torch.allclose(encoder(history, mask, target), expected, atol=1e-6)


def test_masked_softmax_of_all_padding_has_finite_gradient() -> None:
    logits = torch.randn(2, 3, requires_grad=True)
    mask = torch.tensor([[False, False, False], [True, False, True]])
    w = masked_attention_weights(logits, mask, "softmax")
    assert (w[0] == 0).all() and torch.allclose(w[1].sum(), torch.tensor(1.0))
    (w * torch.randn(2, 3)).sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[~mask] == 0).all()
    # Logits at padded positions may be anything (huge ones would overflow a naive exp()).
    wild = torch.tensor([[1e4, 0.0, -1e4]], requires_grad=True)
    w = masked_attention_weights(wild, torch.tensor([[False, True, True]]), "softmax")
    assert w[0, 0] == 0 and torch.allclose(w.sum(), torch.tensor(1.0))
    w[0, 1].backward()
    assert torch.isfinite(wild.grad).all()


def test_attention_gru_carries_state_through_padding_and_reads_newest_last() -> None:
    d = 3
    gru = AttentionGRU(d, hidden=[4])
    history, target = torch.randn(1, 3, d), torch.randn(1, d)
    full = torch.ones(1, 3, dtype=torch.bool)
    # Padding in the middle of the row is a no-op: same state as the row without that step.
    mid_pad = torch.tensor([[True, False, True]])
    squeezed = gru(history[:, [0, 2]], torch.ones(1, 2, dtype=torch.bool), target)
    assert torch.allclose(gru(history, mid_pad, target), squeezed, atol=1e-6)
    # Order matters (a GRU, not a bag): reversing the history changes the state.
    assert not torch.allclose(gru(history, full, target), gru(history.flip(1), full, target))


def test_attention_gru_update_gate_is_scaled_by_attention() -> None:
    # With attention forced to 0 on every step the state never leaves h_0 = 0.
    gru = AttentionGRU(3, hidden=[4])
    history, mask, target = _history(3, 4, 3)
    with torch.no_grad():
        last = gru.scorer.mlp.layers[-1]
        last.weight.zero_()
        last.bias.fill_(-1e4)  # sigmoid(-1e4) == 0
    assert (gru(history, mask, target) == 0).all()


@pytest.mark.parametrize("name", sorted(set(SEQUENCE_ENCODERS) - {"mean"}))  # mean pooling has no parameters
def test_sequence_gradients_reach_every_parameter(name: str) -> None:
    encoder = _encoder(name, 3, [4])
    history, target = torch.randn(4, 3, 3), torch.randn(4, 3)
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[1, 0] = False
    encoder(history, mask, target).square().sum().backward()
    for pname, p in encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_unknown_sequence_encoder_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        build_sequence_encoder("transformer", dim=4)
    assert "din" in str(err.value) and "apgru" in str(err.value)


def test_attention_scorer_equals_the_mlp_on_the_concatenated_pair_and_shares_an_expanded_history() -> None:
    from recsys.modules.sequence import AttentionScorer

    torch.manual_seed(0)
    scorer = AttentionScorer(8)
    history, target = torch.randn(5, 7, 8), torch.randn(5, 8)
    t = target.unsqueeze(1).expand_as(history)
    naive = scorer.mlp(torch.cat([history, t, history - t, history * t], dim=-1)).squeeze(-1)
    assert torch.allclose(scorer(history, target), naive, atol=1e-6)
    one = torch.randn(1, 7, 8)
    shared = scorer(one.expand(5, -1, -1), target)  # serving: one user's history for every candidate
    assert torch.allclose(shared, scorer(one.repeat(5, 1, 1), target), atol=1e-6)
