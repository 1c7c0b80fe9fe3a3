"""Net1D encoders: sizes of the three scales, shapes, norm variants, determinism, config round-trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from clef_core.encoders import EncoderConfig, build_encoder, count_parameters, encoder_from_config
from clef_core.encoders.layers import SamePadConv1d, same_pad, static_same_pad
from clef_core.encoders.net1d import Net1D

torch.set_num_threads(1)

# published sizes (reference code comments / method note); "batch" counts BatchNorm like the reference
PUBLISHED = {("small", "none"): 0.443e6, ("small", "batch"): 0.448e6, ("medium", "batch"): 30.7e6,
             ("medium", "none"): 30.7e6, ("large", "batch"): 296e6, ("large", "none"): 296e6}


def _meta(scale: str, norm: str = "none", **kw) -> Net1D:
    with torch.device("meta"):
        return build_encoder(scale, norm, **kw)


@pytest.mark.parametrize(("scale", "norm"), sorted(PUBLISHED))
def test_parameter_counts_match_the_published_sizes(scale, norm):
    n = count_parameters(_meta(scale, norm))
    assert abs(n - PUBLISHED[scale, norm]) / PUBLISHED[scale, norm] < 0.02, n


def test_exact_small_counts():
    # 443,184 weights; the reference's 4,608 BatchNorm parameters minus the 64 of the first block's
    # bn1, which the reference builds but never applies and we do not build
    assert count_parameters(build_encoder("small")) == 443_184
    assert count_parameters(build_encoder("small", "batch")) == 443_184 + 4_608 - 64
    assert count_parameters(build_encoder("small", "group")) == count_parameters(build_encoder("small", "batch"))


def test_no_norm_modules_without_norm():
    kinds = {type(m) for m in build_encoder("small").modules()}
    assert not kinds & {nn.BatchNorm1d, nn.GroupNorm}
    assert nn.GroupNorm in {type(m) for m in build_encoder("small", "group").modules()}
    assert nn.BatchNorm1d in {type(m) for m in build_encoder("small", "batch").modules()}


@pytest.mark.parametrize("scale", ["small", "medium", "large"])
def test_architecture_follows_the_table(scale):
    enc = _meta(scale)
    cfg = enc.config
    assert [len(stage.block_list) for stage in enc.stage_list] == list(cfg.blocks)
    assert enc.first_conv.conv.out_channels == cfg.stem and enc.first_conv.conv.stride == (2,)
    for s, stage in enumerate(enc.stage_list):
        for b, block in enumerate(stage.block_list):
            mid = int(cfg.filters[s] * cfg.ratio)
            assert block.conv1.conv.out_channels == mid and block.conv1.conv.kernel_size == (1,)
            assert block.conv2.conv.groups == cfg.filters[s] // cfg.groups_width
            assert block.conv2.conv.kernel_size == (16,) and block.conv2.conv.stride == ((2,) if b == 0 else (1,))
            assert block.conv3.conv.out_channels == cfg.filters[s]
            assert block.se.se_fc1.out_features == cfg.filters[s] // 2
            assert block.is_first_block == (s == 0 and b == 0)
    # output shape without computing anything
    assert enc(torch.empty(2, 1, 5000, device="meta")).shape == (2, cfg.emb_dim)


@pytest.mark.parametrize("length", [5000, 2500, 777])
def test_output_shape(length):
    enc = build_encoder("small").eval()
    with torch.no_grad():
        z = enc(torch.randn(3, 1, length))
    assert z.shape == (3, 256) and enc.emb_dim == 256 and torch.isfinite(z).all()


def test_time_length_halves_after_stem_and_every_stage():
    enc = build_encoder("small").eval()
    seen = []
    hooks = [enc.first_activation.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))]
    hooks += [s.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1])) for s in enc.stage_list]
    with torch.no_grad():
        enc(torch.randn(1, 1, 5000))
    for h in hooks:
        h.remove()
    assert seen == [2500, 1250, 625, 313, 157, 79, 40]
    assert Net1D.time_lengths(enc.config, 5000) == seen


def test_same_padding_matches_tensorflow_same():
    assert same_pad(5000, 16, 2) == (7, 7) and same_pad(4999, 16, 2) == (7, 8) and same_pad(10, 16, 1) == (7, 8)
    assert static_same_pad(16, 2) == (7, 8) and static_same_pad(1, 1) == (0, 0) and static_same_pad(5, 2) is None
    for kernel, stride in [(16, 2), (16, 1), (5, 2), (3, 3)]:
        conv = SamePadConv1d(1, 1, kernel, stride)
        for length in (7, 8, 9, 31):
            x = torch.randn(1, 1, length)
            left, right = same_pad(length, kernel, stride)
            expected = conv.conv(torch.nn.functional.pad(x, (left, right)))
            assert torch.allclose(conv(x), expected, atol=1e-6), (kernel, stride, length)
            assert conv(x).shape[-1] == -(-length // stride)


def test_shortcut_pads_zero_channels_on_both_sides_and_max_pools():
    enc = build_encoder("small")
    block = enc.stage_list[1].block_list[0]  # 32 -> 64 channels, stride 2
    assert block.channel_pad == (0, 0, 16, 16)
    with torch.no_grad():  # make the residual branch vanish: out = shortcut(x)
        block.conv3.conv.weight.zero_()
        block.conv3.conv.bias.zero_()
    x = torch.randn(1, 32, 9)
    out = block(x)
    pooled = torch.nn.functional.max_pool1d(torch.nn.functional.pad(x, (0, 1)), 2)  # zeros, not -inf
    assert out.shape == (1, 64, 5)
    assert torch.equal(out[:, 16:48], pooled)
    assert not out[:, :16].any() and not out[:, 48:].any()


@pytest.mark.parametrize("norm", ["none", "batch", "group"])
def test_norm_variants_build_train_and_eval(norm):
    enc = build_encoder("small", norm)
    assert enc.config.norm == norm
    z = enc.train()(torch.randn(4, 1, 1000))
    z.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())
    with torch.no_grad():
        assert enc.eval()(torch.randn(1, 1, 1000)).shape == (1, 256)


def test_group_norm_groups_are_validated():
    assert build_encoder("small", "group", norm_groups=4).stage_list[0].block_list[0].norm2.num_groups == 4
    with pytest.raises(ValueError, match="norm_groups"):
        build_encoder("small", "group", norm_groups=7)


def test_deterministic_with_a_seed():
    torch.manual_seed(123)
    a = build_encoder("small")
    torch.manual_seed(123)
    b = build_encoder("small")
    x = torch.randn(2, 1, 1000)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(a(x), b(x))
    torch.manual_seed(124)
    assert not torch.equal(build_encoder("small")(x), a(x))


def test_gradients_reach_the_first_layer():
    enc = build_encoder("small")
    enc(torch.randn(2, 1, 1000)).sum().backward()
    grad = enc.first_conv.conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(("scale", "norm"), [("small", "none"), ("small", "group"), ("medium", "batch")])
def test_config_round_trip(scale, norm):
    enc = _meta(scale, norm) if scale != "small" else build_encoder(scale, norm)
    plain = dataclasses.asdict(enc.config)
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()}  # as JSON gives it back
    with torch.device("meta"):
        again = encoder_from_config(plain)
    assert again.config == enc.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in enc.state_dict().items()}


def test_overrides_and_bad_configs():
    enc = build_encoder("small", filters=[16, 32], blocks=[1, 1], stem=16, groups_width=4)
    assert enc.emb_dim == 32 and enc(torch.randn(1, 1, 300)).shape == (1, 32)
    assert build_encoder("small", in_channels=12)(torch.randn(1, 12, 300)).shape == (1, 256)
    with pytest.raises(ValueError, match="scale 'huge'"):
        build_encoder("huge")
    with pytest.raises(ValueError, match="norm='layer'"):
        build_encoder("small", "layer")
    with pytest.raises(ValueError, match="unknown encoder config key.*widht"):
        build_encoder("small", widht=3)
    with pytest.raises(ValueError, match="emb_dim"):
        build_encoder("small", emb_dim=128)
    with pytest.raises(ValueError, match="blocks"):
        EncoderConfig("x", 8, 1.0, (8, 16), (1,), 8, 16)


def test_exports_with_a_dynamic_time_axis():
    # no data- or length-dependent Python control flow: one exported graph serves every length
    from torch.export import Dim, export

    enc = build_encoder("small").eval()
    program = export(enc, (torch.randn(2, 1, 5000),), dynamic_shapes={"x": {2: Dim("T", min=1024, max=20000)}})
    for length in (1024, 3001, 5000):
        x = torch.randn(2, 1, length)
        assert torch.allclose(program.module()(x), enc(x), atol=1e-5), length
