"""tools/gpu_check.py on the CPU (tiny configs, the CUDA-only figures left out): every section runs, its parity
figures are at float rounding, and it writes its JSON. On a CUDA machine the same script measures full size."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))


def test_gpu_check_runs_on_the_cpu(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    import gpu_check
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("MINIDIFF_PROMPT_CACHE", str(tmp_path / "unused"))      # the check points it elsewhere
    result = gpu_check.main(["--json", str(tmp_path / "check.json")])
    assert json.loads((tmp_path / "check.json").read_text()) == json.loads(json.dumps(result))
    assert result["full_size"] is False and [r["model"] for r in result["unet"]] == ["IF-I-XL-v1.0", "IF-II-L-v1.0"]
    assert all(r["max_abs_diff_rel"] < 1e-5 and r["ours_peak_gb"] is None for r in result["unet"])   # fp32 on CPU
    t5 = result["t5"]
    assert t5["bf16_finite"] and t5["fp16_wo_fp32_finite"] and t5["fp16_wo_fp32_rel_error"] < 0.05
    assert result["part0"]["finite"] and result["part0"]["images"] == [3, 3, 32, 32]
    assert [r["stage"] for r in result["part_b"]] == ["b1_2_1_train_denoiser", "b2_2_train_time_conditioned",
                                                      "b2_4_train_class_conditioned"]
