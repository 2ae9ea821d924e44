import pytest
import torch

from videoccam.configuration import CCAMProjectorConfig
from videoccam.errors import ConfigError
from videoccam.masks import ccam_query_frames
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


def test_plain_cross_attention_is_order_invariant():
    """The paper's motivating fact: without the mask (and no temporal embedding) order is invisible."""
    proj, v = make(mask="none"), frames(5)
    perm = torch.tensor([4, 2, 0, 3, 1])
    torch.testing.assert_close(proj(v, [5]).embeds, proj(v[perm], [5]).embeds, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [1, 2, 3])
def test_changing_frame_t_leaves_earlier_blocks_unchanged(t):
    proj, v = make(), frames(4)
    changed = v.clone()
    changed[t:] = torch.randn_like(changed[t:])
    a = proj(v, [4])
    b = proj(changed, [4])
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


def _prefix_attention(attn, x: torch.Tensor, kv: torch.Tensor, visible: list[int]) -> torch.Tensor:
    """Query i attends, by slicing, to the first ``visible[i]`` of ``kv``: ``[Q, D], [S, Dkv] -> [Q, D]``."""
    heads, dh = attn.num_heads, attn.head_dim
    q = attn.q_proj(x).unflatten(-1, (heads, dh))  # [Q, H, Dh]
    k = attn.k_proj(kv).unflatten(-1, (attn.num_kv_heads, dh)).repeat_interleave(heads // attn.num_kv_heads, 1)
    v = attn.v_proj(kv).unflatten(-1, (attn.num_kv_heads, dh)).repeat_interleave(heads // attn.num_kv_heads, 1)
    rows = []
    for i, n in enumerate(visible):  # k, v: [S, H, Dh]
        probs = (torch.einsum("hd,shd->hs", q[i], k[:n]) * dh ** -0.5).softmax(-1)  # [H, n]
        rows.append(torch.einsum("hs,shd->hd", probs, v[:n]).flatten())  # [H*Dh]
    return attn.o_proj(torch.stack(rows))


def reference(proj: CCAMProjector, visual: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """The projector written out item by item, with no mask tensor, no padding and no SDPA: query i attends to
    the queries k with g(k) <= g(i) and to the P keys of frames 0..g(i) (both prefixes, as g is non-decreasing);
    ``mask="none"``: to all of them. ``[N, P, Dv] -> [M, Q, Do]``."""
    cfg = proj.config
    outputs = []
    for v in visual.split(counts):  # [T, P, Dv]
        t, p = v.shape[0], v.shape[1]
        g = ccam_query_frames(cfg.num_query, t).tolist()
        ccam = cfg.mask == "ccam"
        seen_queries = [sum(gk <= gi for gk in g) if ccam and cfg.causal_query_self_attention else cfg.num_query
                        for gi in g]
        seen_keys = [(gi + 1) * p if ccam else t * p for gi in g]
        x = proj.query
        for layer in proj.layers:
            h = layer.self_norm(x)
            x = x + _prefix_attention(layer.self_attn, h, h, seen_queries)
            kv = layer.kv_norm(v).flatten(0, 1)  # [T*P, Dv], frame-major
            x = x + _prefix_attention(layer.cross_attn, layer.cross_norm(x), kv, seen_keys)
            x = x + layer.mlp(layer.mlp_norm(x))
        outputs.append(proj.output_proj(proj.norm(x)))
    return torch.stack(outputs)


@pytest.mark.parametrize("overrides", [
    {}, {"mask": "none"}, {"num_key_value_heads": 4}, {"causal_query_self_attention": False}, {"num_query": 5},
])
@pytest.mark.parametrize("counts", [[3, 1, 7, 16], [6, 6, 6]])  # T > Q for num_query=5, an image; equal clips
def test_projector_equals_the_maskless_reference(overrides, counts):
    """The padded, masked SDPA batch equals each item computed alone by slicing exactly what each query sees."""
    proj = make(**overrides)
    v = torch.randn(sum(counts), P, DV, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(proj(v, counts).embeds, reference(proj, v, counts), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("counts", [[2, 5], [4, 4]])
def test_projector_gradients_equal_the_reference(counts):
    """Gradients (every parameter and the visual input) equal those of the mask-free per-item reference; the
    padding frames of the shorter item get none."""
    proj = make()
    v = torch.randn(sum(counts), P, DV, generator=torch.Generator().manual_seed(2))
    grads = []
    for forward in (lambda x: proj(x, counts).embeds, lambda x: reference(proj, x, counts)):
        proj.zero_grad()
        x = v.clone().requires_grad_(True)
        forward(x).square().sum().backward()
        grads.append(torch.cat([x.grad.flatten()] + [p.grad.flatten() for p in proj.parameters()]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_batched_variable_length_equals_single():
    proj = make()
    counts = [4, 1, 9]
    v = torch.randn(sum(counts), P, DV, generator=torch.Generator().manual_seed(3))
    batched = proj(v, counts).embeds
    single = torch.cat([proj(x, [n]).embeds for x, n in zip(v.split(counts), counts, strict=True)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_bad_frame_counts_raise():
    proj = make()
    with pytest.raises(ValueError, match="sum to the number of frames"):
        proj(frames(4), [3])


def test_config_validation_names_the_field():
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
    proj(frames(5), [2, 3])
    assert calls == [(12, [2, 3], P)]


def test_streaming_path_was_removed():
    """The removed mask-free path is a ConfigError saying so (and what to use), in the config and when the config
    is changed after validation; forward no longer takes a path."""
    assert make().config.path == "dense"
    with pytest.raises(ConfigError, match=r"projector_config\.path: the 'streaming' projector path was removed "
                                          r".*2026-12-05-projector-decision\.md.*use 'dense'"):
        make(path="streaming")
    with pytest.raises(ConfigError, match=r"projector_config\.path must be 'dense'"):
        make(path="flash")
    proj = make()
    proj.config.path = "streaming"
    with pytest.raises(ConfigError, match="was removed"):
        proj(frames(4), [4])
    with pytest.raises(TypeError, match="path"):
        make()(frames(4), [4], path="dense")
