import pytest
import torch

from videoccam.configuration import CCAMProjectorConfig
from videoccam.projector import CCAMProjector

P, DV = 6, 24


def make(**kw) -> CCAMProjector:
    cfg = dict(num_query=12, hidden_size=32, cross_hidden_size=DV, num_heads=4, num_key_value_heads=2,
               intermediate_size=64, output_size=40, num_layers=2, dropout=0.0, attention_dropout=0.0)
    cfg.update(kw)
    torch.manual_seed(0)
    return CCAMProjector(CCAMProjectorConfig(**cfg)).eval()


def frames(t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, P, DV, generator=g)


def test_output_shapes_and_frame_ids():
    out = make()(frames(4), [4])
    assert out.embeds.shape == (1, 12, 40)
    assert out.frame_ids.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]]
    assert make(mask="none")(frames(4), [4]).frame_ids.tolist() == [[0] * 12]


def test_frame_order_changes_ccam_output():
    proj, v = make(), frames(4)
    perm = torch.tensor([2, 0, 3, 1])
    assert not torch.allclose(proj(v, [4]).embeds, proj(v[perm], [4]).embeds, atol=1e-4)


@pytest.mark.parametrize("path", ["dense", "streaming"])
def test_plain_cross_attention_is_order_invariant(path):
    """The paper's motivating fact: without the mask (and no temporal embedding) order is invisible."""
    proj, v = make(mask="none"), frames(5)
    perm = torch.tensor([4, 2, 0, 3, 1])
    torch.testing.assert_close(proj(v, [5], path=path).embeds, proj(v[perm], [5], path=path).embeds,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("path", ["dense", "streaming"])
@pytest.mark.parametrize("t", [1, 2, 3])
def test_changing_frame_t_leaves_earlier_blocks_unchanged(path, t):
    proj, v = make(), frames(4)
    changed = v.clone()
    changed[t:] = torch.randn_like(changed[t:])
    a = proj(v, [4], path=path)
    b = proj(changed, [4], path=path)
    earlier = a.frame_ids[0] < t
    torch.testing.assert_close(a.embeds[0, earlier], b.embeds[0, earlier], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a.embeds[0, ~earlier], b.embeds[0, ~earlier], atol=1e-4)


def test_unmasked_query_self_attention_leaks_later_frames():
    """Why `causal_query_self_attention` exists: without it, early blocks see later frames."""
    proj, v = make(causal_query_self_attention=False), frames(4)
    changed = v.clone()
    changed[3] = torch.randn_like(changed[3])
    a, b = proj(v, [4]), proj(changed, [4])
    assert not torch.allclose(a.embeds[0, :3], b.embeds[0, :3], atol=1e-5)


@pytest.mark.parametrize("overrides", [
    {}, {"mask": "none"}, {"num_key_value_heads": 4}, {"causal_query_self_attention": False}, {"num_query": 5},
])
@pytest.mark.parametrize("counts", [[3, 1, 7, 16], [6, 6, 6]])  # T > Q for num_query=5, an image; equal clips
def test_dense_equals_streaming(overrides, counts):
    proj = make(**overrides)
    v = torch.randn(sum(counts), P, DV)
    dense = proj(v, counts, path="dense")
    fast = proj(v, counts, path="streaming")
    torch.testing.assert_close(dense.embeds, fast.embeds, atol=2e-5, rtol=2e-5)
    assert torch.equal(dense.frame_ids, fast.frame_ids)


@pytest.mark.parametrize("counts", [[2, 5], [4, 4]])
def test_dense_equals_streaming_gradients(counts):
    proj = make()
    v = torch.randn(sum(counts), P, DV)
    grads = []
    for path in ("dense", "streaming"):
        proj.zero_grad()
        proj(v, counts, path=path).embeds.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in proj.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("path", ["dense", "streaming"])
def test_batched_variable_length_equals_single(path):
    proj = make()
    counts = [4, 1, 9]
    v = torch.randn(sum(counts), P, DV)
    batched = proj(v, counts, path=path).embeds
    single = torch.cat([proj(x, [n], path=path).embeds for x, n in zip(v.split(counts), counts, strict=True)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_bad_frame_counts_raise():
    proj = make()
    with pytest.raises(ValueError, match="sum to the number of frames"):
        proj(frames(4), [3])
    with pytest.raises(ValueError, match="path"):
        proj(frames(4), [4], path="flash")


def test_config_validation_names_the_field():
    from videoccam.errors import ConfigError

    with pytest.raises(ConfigError, match="num_heads"):
        CCAMProjectorConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ConfigError, match="mask"):
        CCAMProjectorConfig(mask="diagonal")


def test_dense_path_builds_the_key_mask_once_per_forward(monkeypatch):
    """The masks come from videoccam.masks, built once per forward and shared by every block."""
    import videoccam.projector as projector_module

    calls = []
    real = projector_module.projector_key_mask

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(projector_module, "projector_key_mask", counting)
    proj = make(num_layers=3)
    proj(frames(5), [2, 3], path="dense")
    assert calls == [(12, [2, 3], P)]
    proj(frames(5), [2, 3], path="streaming")  # mask-free
    assert len(calls) == 1


def test_config_path_is_the_default_and_the_argument_overrides_it(monkeypatch):
    import videoccam.projector as projector_module
    from videoccam.errors import ConfigError

    calls = []
    real = projector_module.projector_key_mask
    monkeypatch.setattr(projector_module, "projector_key_mask", lambda *a, **k: calls.append(a) or real(*a, **k))
    dense, streaming = make(), make(path="streaming")  # same seed: same weights
    v = frames(5)
    out = streaming(v, [2, 3])
    assert calls == []  # the config's streaming path: no mask
    torch.testing.assert_close(out.embeds, dense(v, [2, 3]).embeds, atol=2e-5, rtol=2e-5)
    assert len(calls) == 1
    streaming(v, [2, 3], path="dense")  # the argument wins for this call
    assert len(calls) == 2
    streaming.config.path = "flash"  # changed after validation: named when used
    with pytest.raises(ConfigError, match=r"projector_config\.path"):
        streaming(v, [2, 3])
