"""A K2-style checkpoint (model_type kimi_k2 + auto_map) without trust_remote_code: one line, before loading."""

from __future__ import annotations

import json

import pytest

from workbench.errors import WorkbenchError
from workbench.model_checks import RemoteCodeRequired, require_trust_remote_code

K2_CONFIG = {  # the identity fields of moonshotai/Kimi-K2-Thinking's config.json
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "kimi_k2",
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModel": "modeling_deepseek.DeepseekV3Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
    },
}


def _ckpt(tmp_path, cfg):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_k2_config_without_trust_remote_code_is_one_line(tmp_path):
    d = _ckpt(tmp_path, K2_CONFIG)
    with pytest.raises(RemoteCodeRequired, match=r"'kimi_k2' is not built into transformers.*--trust-remote-code") as e:
        require_trust_remote_code(d, trust_remote_code=False)
    assert isinstance(e.value, WorkbenchError) and "\n" not in str(e.value)
    assert "trust_remote_code=True" in str(e.value)
    require_trust_remote_code(d, trust_remote_code=True)  # allowed: the loader runs the shipped code


def test_transformers_really_refuses_it_without_the_flag(tmp_path):
    """The check mirrors transformers: AutoConfig cannot build a kimi_k2 config without remote code."""
    from transformers import AutoConfig

    d = _ckpt(tmp_path, K2_CONFIG)
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoConfig.from_pretrained(str(d), trust_remote_code=False)


@pytest.mark.parametrize(
    "cfg",
    [
        {"model_type": "deepseek_v3", "auto_map": K2_CONFIG["auto_map"]},  # registered: transformers' own code
        {"model_type": "kimi_k2"},  # no auto_map: nothing to trust; the loader's own error applies
        ["not", "an", "object"],
    ],
)
def test_other_configs_pass(tmp_path, cfg):
    require_trust_remote_code(_ckpt(tmp_path, cfg), trust_remote_code=False)
    require_trust_remote_code(tmp_path / "missing", trust_remote_code=False)


def test_bundled_mini_k2_passes():
    from pathlib import Path

    require_trust_remote_code(Path(__file__).resolve().parents[1] / "data/models/k2-mini", trust_remote_code=False)
