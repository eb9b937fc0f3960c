"""Shared fixtures: tiny IF-shaped UNet configs (diffusers config.json format) derived from the real ones, and the
judges of minidiff.evaluate (the far judge too) trained on a few digits for the whole session (the real ones take
minutes)."""
import json
from pathlib import Path

import pytest
import torch

DEEPFLOYD_FIXTURES = Path(__file__).parent / "fixtures" / "deepfloyd"


@pytest.fixture(scope="session", autouse=True)
def judges_cache(tmp_path_factory):
    """$MINIDIFF_JUDGES -> a folder with the three judges (CNN, MLP, far) trained one epoch on 1024 digits, cached as
    if by their recipes: every stage that measures samples loads them instead of training the real ones. Yields the
    folder."""
    import os
    from minidiff.data import atomic_save, load_mnist
    from minidiff.evaluate import JUDGES_ENV, RECIPES, train_classifier
    folder = tmp_path_factory.mktemp("judges")
    x, y = load_mnist(train=True)
    torch.manual_seed(0)
    for kind in ("cnn", "mlp", "far"):
        model = train_classifier(x[:1024], y[:1024], kind, 1, progress=False)
        atomic_save({"model": model.state_dict(), "recipe": {**RECIPES[kind], "kind": kind}, "test_accuracy": 0.5},
                    folder / f"mnist_{kind}.pt")
    before = os.environ.get(JUDGES_ENV)
    os.environ[JUDGES_ENV] = str(folder)
    yield folder
    if before is None:
        del os.environ[JUDGES_ENV]
    else:
        os.environ[JUDGES_ENV] = before


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
