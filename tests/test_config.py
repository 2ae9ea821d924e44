import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoConfig

import videoccam
from videoccam import ConfigError, VideoCCAMConfig

FIXTURE = Path(__file__).parent / "fixtures" / "videoccam_7b_v1.2_config.json"


def test_released_v12_config_parses(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "config.json")
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(cfg, VideoCCAMConfig)
    p = cfg.projector_config
    assert (p.num_query, p.hidden_size, p.cross_hidden_size, p.num_heads, p.intermediate_size) == (
        1024, 1024, 1152, 16, 4096)
    assert (p.hidden_act, p.attention_bias, p.mlp_bias, p.dropout, p.layer_norm_eps) == (
        "swiglu", True, True, 0.1, 1e-5)
    assert p.output_size == cfg.text_config.hidden_size == 3584
    assert cfg.text_config.model_type == "qwen2" and cfg.text_config.num_hidden_layers == 28
    assert cfg.vision_config.hidden_size == 1152 and cfg.vision_config.patch_size == 14
    assert (cfg.image_token_id, cfg.video_token_id, cfg.num_visual_tokens) == (151665, 151666, 1024)
    # our additions take the defaults that reproduce Video-CCAM
    assert (p.num_layers, p.mask, p.causal_query_self_attention) == (1, "ccam", True)
    assert (cfg.vision_select_layer, cfg.frame_block_mask, cfg.temporal_rope) == (-2, False, "none")


def test_round_trip(tmp_path):
    cfg = VideoCCAMConfig.from_dict(json.loads(FIXTURE.read_text()))
    cfg.save_pretrained(tmp_path)
    again = AutoConfig.from_pretrained(tmp_path)
    assert again.projector_config.to_dict() == cfg.projector_config.to_dict()
    assert again.text_config.hidden_size == cfg.text_config.hidden_size


@pytest.mark.parametrize("change, field", [
    ({"projector_config": {"output_size": 100}}, "output_size"),
    ({"projector_config": {"cross_hidden_size": 100}}, "cross_hidden_size"),
    ({"video_token_id": 151665}, "video_token_id"),
    ({"rope_gamma": -1.0}, "rope_gamma"),
])
def test_inconsistent_config_names_the_field(change, field):
    data = json.loads(FIXTURE.read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    with pytest.raises(ConfigError, match=field):
        VideoCCAMConfig.from_dict(data)


def test_version_is_exported():
    assert videoccam.__version__


REMOVED = r"the 'streaming' projector path was removed .*2026-12-05-projector-decision\.md.*use 'dense'"


def test_projector_path_accepts_only_dense_and_names_the_removal_of_streaming():
    from videoccam import CCAMProjectorConfig

    assert CCAMProjectorConfig().path == CCAMProjectorConfig(path="dense").path == "dense"
    with pytest.raises(ConfigError, match=r"projector_config\.path: " + REMOVED):
        CCAMProjectorConfig(path="streaming")
    with pytest.raises(ConfigError, match=r"projector_config\.path must be 'dense' \(the only projector path\)"):
        CCAMProjectorConfig(path="flash")
    cfg = VideoCCAMConfig.from_dict(json.loads(FIXTURE.read_text()))
    assert cfg.projector_config.path == cfg.projector_path == "dense"  # absent from v1.2 files: the default
    cfg.projector_path = "dense"
    assert "projector_path" not in cfg.to_dict()
    with pytest.raises(ConfigError, match=r"projector_path: " + REMOVED):
        cfg.projector_path = "streaming"
    assert cfg.projector_config.path == "dense"


def test_config_files_naming_a_projector_path(tmp_path):
    """A config.json written with ``"path": "dense"`` still loads and saves; one with ``"streaming"`` fails
    naming the removal."""
    data = json.loads(FIXTURE.read_text())
    data["projector_config"]["path"] = "dense"
    VideoCCAMConfig.from_dict(data).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["projector_config"]["path"] == "dense"
    assert AutoConfig.from_pretrained(tmp_path).projector_config.path == "dense"
    data["projector_config"]["path"] = "streaming"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=REMOVED):
        AutoConfig.from_pretrained(tmp_path)


def test_training_config_projector_path():
    """``model.projector.path``: ``dense`` (older YAML files) builds; ``streaming`` fails naming the removal."""
    from videoccam.configs import resolve_config
    from videoccam.train import load_config
    from videoccam.train.build import build_model

    config = load_config(resolve_config("tiny-align"), ["data.train=x.json", "model.projector.path=dense"])
    model, _ = build_model(config.model, 4)
    assert model.projector.config.path == model.config.projector_config.path == "dense"
    config = load_config(resolve_config("tiny-align"), ["data.train=x.json", "model.projector.path=streaming"])
    with pytest.raises(ConfigError, match=r"projector_config\.path: " + REMOVED):
        build_model(config.model, 4)
