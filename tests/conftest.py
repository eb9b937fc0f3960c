"""Shared fixtures: tiny IF-shaped UNet configs (diffusers config.json format) derived from the real ones."""
import json
from pathlib import Path

import pytest
import torch

DEEPFLOYD_FIXTURES = Path(__file__).parent / "fixtures" / "deepfloyd"


@pytest.fixture(autouse=True)
def one_thread():
    """Every test runs tiny models: one thread is faster than two contended ones on a small shared machine,
    and results do not depend on how many cores the machine has."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(name: str, **shapes) -> dict:
    d = json.loads((DEEPFLOYD_FIXTURES / f"{name}.unet.config.json").read_text())
    d.update(shapes)
    return d


@pytest.fixture
def tiny_unet_dicts() -> dict:
    """{"I": ..., "II": ...}: the IF-I-XL / IF-II-L config.json with only the widths and depths shrunk
    (same block types, scale-shift, skip-time-act, out scale factors, class embedding, text pooling)."""
    return {
        "I": _tiny("IF-I-XL-v1.0", block_out_channels=[32, 64, 96, 128], layers_per_block=2,
                   attention_head_dim=16, cross_attention_dim=128, encoder_hid_dim=64,
                   addition_embed_type_num_heads=4, sample_size=16),
        "II": _tiny("IF-II-L-v1.0", block_out_channels=[32, 32, 64, 64, 96], layers_per_block=[1, 1, 1, 2, 2],
                    attention_head_dim=16, cross_attention_dim=96, encoder_hid_dim=64, time_embedding_dim=96,
                    addition_embed_type_num_heads=4, sample_size=32),
    }
