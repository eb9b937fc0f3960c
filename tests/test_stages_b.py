"""Part B stages end to end, as `make demo` runs them (run_all.run_stage: in one process), on tiny models: every
stage succeeds and writes the figures its docstring names; a stage with missing input fails with its one-line
error and the run goes on."""
import argparse
import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "stages"))

import common  # noqa: E402
import part_b  # noqa: E402
import run_all  # noqa: E402

TINY = ["--epochs", "1", "--num-hiddens", "8", "--images", "256"]   # a second per model instead of minutes
PIPELINE = [   # (stage, extra arguments, files it writes)
    ("b1_2_noising", [], ["noising.png"]),
    ("b1_2_1_train_denoiser", TINY, ["checkpoint.pt", "model_epoch1.pt", "loss.png", "results_epoch1.png"]),
    ("b1_2_2_out_of_distribution", [], ["ood.png"]),
    ("b2_2_train_time_conditioned", ["--epochs", "2", *TINY[2:]], ["checkpoint.pt", "model_epoch1.pt",
                                                                    "model_epoch2.pt", "loss.png"]),
    ("b2_3_sample_time_conditioned", ["--num-samples", "10"], ["samples_epoch1.png", "denoising_epoch1.gif",
                                                               "samples_epoch2.png", "denoising_epoch2.gif",
                                                               "autoguided.png", "metrics.json", "samples.pt"]),
    ("b2_4_train_class_conditioned", TINY, ["checkpoint.pt", "model_epoch1.pt", "loss.png"]),
    ("b2_5_sample_class_conditioned", ["--per-digit", "2"], ["samples_epoch1.png", "denoising_epoch1.gif",
                                                             "metrics.json", "samples.pt"]),
    ("b2_6_ddim_steps", ["--per-digit", "1"], ["samples.png", "metrics.json", "samples.pt"]),
]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """An output folder for the whole module (the judges come from conftest's judges_cache)."""
    return tmp_path_factory.mktemp("outputs")


def test_part_b_pipeline_runs_in_order_and_writes_every_figure(out, capsys):
    args = argparse.Namespace(out=out, device="cpu", seed=0, quick=True)
    for stage, extra, files in PIPELINE:
        section = run_all.run_stage(stage, args, extra)
        assert section["status"].startswith("ok"), (stage, section["status"])
        assert sorted(p.name for p in (out / stage).iterdir()) == sorted(files), stage
        assert sorted(section["files"]) == sorted(out / stage / f for f in files), stage   # the stage's record
    printed = capsys.readouterr().out
    assert "=== b2_5_sample_class_conditioned" in printed and "class accuracy" in printed
    assert f"wrote {out / 'b2_5_sample_class_conditioned' / 'metrics.json'}" in printed       # shown to humans

    metrics = json.loads((out / "b2_3_sample_time_conditioned" / "metrics.json").read_text())
    assert list(metrics) == ["epoch2", "epoch2_autoguided"]        # epoch 2 autoguided by epoch 1, the same 10 noises
    guided = metrics["epoch2_autoguided"]
    assert guided["n"] == 10 and guided["bad_epoch"] == 1 and guided["w"] == part_b.AUTOGUIDANCE_W
    assert guided["frechet"] != metrics["epoch2"]["frechet"]

    metrics = json.loads((out / "b2_5_sample_class_conditioned" / "metrics.json").read_text())
    assert list(metrics) == ["epoch1"] and metrics["epoch1"]["n"] == 20
    s = torch.load(out / "b2_5_sample_class_conditioned" / "samples.pt", weights_only=True)
    assert s["images"].shape == (20, 1, 28, 28) and s["labels"].tolist() == list(range(10)) * 2
    assert 0 <= s["images"].min() and s["images"].max() <= 1


FLOW_PIPELINE = [   # the 2025 course's Part B after the shared Part 1, then the comparison with the DDPM model
    ("fm1_2_3_denoising_pure_noise", TINY, ["checkpoint.pt", "model_epoch1.pt", "loss.png", "results_epoch1.png"]),
    ("fm2_2_train_time_conditioned", TINY, ["checkpoint.pt", "model_epoch1.pt", "loss.png"]),
    ("fm2_3_sample_time_conditioned", ["--num-samples", "10", "--steps", "5"],
     ["samples_epoch1.png", "denoising_epoch1.gif", "metrics.json", "samples.pt"]),
    ("fm2_5_train_class_conditioned", TINY, ["checkpoint.pt", "model_epoch1.pt", "loss.png"]),
    ("fm2_6_sample_class_conditioned", ["--per-digit", "2", "--steps", "5"],
     ["samples_epoch1.png", "denoising_epoch1.gif", "metrics.json", "samples.pt"]),
    ("fm2_6_1_without_the_scheduler", TINY + ["--per-digit", "1"],
     ["checkpoint.pt", "model_epoch1.pt", "loss.png", "compare.png", "metrics.json"]),
    ("b2_4_train_class_conditioned", TINY, ["checkpoint.pt", "model_epoch1.pt", "loss.png"]),   # (done already)
    ("fm2_7_flow_vs_ddpm", ["--per-digit", "1"], ["samples.png", "metrics.json", "samples.pt"]),
]


def test_flow_matching_pipeline_runs_in_order_and_writes_every_figure(out):
    args = argparse.Namespace(out=out, device="cpu", seed=0, quick=True)
    for stage, extra, files in FLOW_PIPELINE:
        section = run_all.run_stage(stage, args, extra)
        assert section["status"].startswith("ok"), (stage, section["status"])
        assert sorted(p.name for p in (out / stage).iterdir()) == sorted(files), stage
    s = torch.load(out / "fm2_3_sample_time_conditioned" / "samples.pt", weights_only=True)
    assert s["images"].shape == (10, 1, 28, 28) and "labels" not in s
    metrics = json.loads((out / "fm2_6_1_without_the_scheduler" / "metrics.json").read_text())
    assert list(metrics) == ["exponential schedule (fm2_5)", "constant rate 1e-3 + EMA"]      # side by side
    assert all(m["n"] == 10 for m in metrics.values())
    assert json.loads((out / "fm2_3_sample_time_conditioned" / "metrics.json").read_text())["epoch1"]["n"] == 10
    metrics = json.loads((out / "fm2_7_flow_vs_ddpm" / "metrics.json").read_text())
    assert [m["model_evaluations"] for m in metrics.values()] == [10, 50, 10, 50, 9, 49]    # --quick: none of 300
    assert all(0 <= m["class_accuracy"] <= 1 and m["frechet_real_floor"] > 0 for m in metrics.values())
    notes = run_all.run_stage("fm1_2_3_denoising_pure_noise", args, TINY)["notes"]
    assert any("RMS from the mean training digit" in n for n in notes)


def test_run_all_lays_out_both_versions_of_part_b_with_part_1_once():
    groups = run_all.part_b_stages("both")
    assert list(groups) == ["ddpm", "flow"] and groups["ddpm"][:3] == run_all.PART_1
    assert not set(run_all.PART_1) & set(groups["flow"]) and groups["flow"][-1] == "fm2_7_flow_vs_ddpm"
    assert run_all.part_b_stages("flow") == {"flow": run_all.PART_1 + run_all.PART_B["flow"]}


def test_a_failing_stage_reports_its_one_line_error_and_the_run_goes_on(tmp_path):
    args = argparse.Namespace(out=tmp_path, device="cpu", seed=0, quick=True)
    section = run_all.run_stage("b2_3_sample_time_conditioned", args, [])
    assert section["status"].startswith("error: no trained model at") and section["files"] == []
    assert f"run `python stages/b2_2_train_time_conditioned.py --quick --out {tmp_path}` first" in section["status"]
    assert sys.argv[0] != str(REPO / "stages" / "b2_3_sample_time_conditioned.py")   # argv restored
    assert run_all.run_stage("b1_2_noising", args, [])["status"].startswith("ok")


def test_quick_profile_uses_bf16_only_where_the_hardware_computes_it(monkeypatch):
    args = argparse.Namespace(quick=True, seed=0, bf16=False, epochs=None, num_hiddens=None, ema=None)
    cpu = torch.device("cpu")
    monkeypatch.setattr(common, "_cpu_flags", lambda: {"avx2", "fma"})              # bf16 would be emulated
    assert not common.native_bf16(cpu) and not part_b.training_config(args, "class", cpu).bf16
    assert common.model_dtype(args, cpu) == torch.float32                           # sampling too
    monkeypatch.setattr(common, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert part_b.training_config(args, "class", cpu).bf16 and common.model_dtype(args, cpu) == torch.bfloat16
    assert common.model_dtype(argparse.Namespace(quick=False), cpu) == torch.float32   # the report's profile: fp32
    assert not part_b.training_config(argparse.Namespace(**{**vars(args), "quick": False}), "class", cpu).bf16
    assert part_b.training_config(argparse.Namespace(**{**vars(args), "quick": False, "bf16": True}), "class",
                                  cpu).bf16                                        # --bf16 asks for it anywhere


def test_sampling_a_training_run_that_stopped_early_uses_its_latest_weights(out, tmp_path, capsys):
    """Training stopped (Ctrl-C, or still running) after epoch 2 of 3: the snapshot of epoch 1 exists, epoch 2's
    weights live only in checkpoint.pt. The sampling stage samples both and says the run is unfinished."""
    from minidiff.data import load_mnist
    from minidiff.train import TrainConfig, load_checkpoint, train
    x, y = load_mnist(train=True)
    run = tmp_path / "run"
    train(TrainConfig.class_conditioned(num_hiddens=8, epochs=2, batch_size=64, snapshot_epochs=(1,)), run,
          x[:128], y[:128], progress=False)
    (run / "model_epoch2.pt").unlink()                  # as if the schedule had 3 epochs and only 2 were done
    state = load_checkpoint(run / "checkpoint.pt")
    state["config"]["epochs"] = 3
    torch.save(state, run / "checkpoint.pt")

    args = argparse.Namespace(out=out, device="cpu", seed=0, quick=False)
    section = run_all.run_stage("b2_5_sample_class_conditioned", args,
                                ["--checkpoint", str(run / "checkpoint.pt"), "--per-digit", "1"])
    assert section["status"].startswith("ok"), section["status"]
    assert "stopped after epoch 2 of 3" in capsys.readouterr().out
    assert any(note.endswith("stopped after epoch 2 of 3: sampling it as it is (rerun the training stage to finish)")
               for note in section["notes"])
    metrics = json.loads((out / "b2_5_sample_class_conditioned" / "metrics.json").read_text())
    assert list(metrics) == ["epoch1", "epoch2"]
    # --epoch: one snapshot only (each takes ~100 CPU minutes in the report profile)
    only = ["--checkpoint", str(run / "checkpoint.pt"), "--per-digit", "1", "--epoch"]
    assert run_all.run_stage("b2_5_sample_class_conditioned", args, only + ["2"])["status"] == "ok"
    metrics = json.loads((out / "b2_5_sample_class_conditioned" / "metrics.json").read_text())
    assert list(metrics) == ["epoch2"] and metrics["epoch2"]["n"] == 10
    status = run_all.run_stage("b2_5_sample_class_conditioned", args, only + ["7"])["status"]
    assert status == "error: no snapshot of epoch 7; this run has epochs [1, 2]"


def test_run_all_finds_the_figures_of_a_relative_out_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                   # outside the repository, --out relative to it
    args = argparse.Namespace(out=Path("rel_out"), device="cpu", seed=0, quick=True)
    section = run_all.run_stage("b1_2_noising", args, [])
    assert section["files"] == [tmp_path / "rel_out" / "b1_2_noising" / "noising.png"]
    assert section["files"][0].is_file()


# ---------------------------------------------------------------------------------------------------------------
# The b2_6 stage (DDIM steps) alone, on a tiny model: seconds.
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from minidiff.data import load_mnist
    from minidiff.train import TrainConfig, train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ddim")
    x, y = load_mnist()
    train(TrainConfig.class_conditioned(num_hiddens=8, epochs=1, batch_size=64), root / "model", x[:512], y[:512],
          progress=False)
    yield root
    torch.set_num_threads(threads)


@pytest.mark.parametrize("quick", [False, True])
def test_stage_b2_6_writes_figure_metrics_and_samples(tiny_run, quick):
    stage = importlib.import_module("b2_6_ddim_steps")
    out = tiny_run / f"out{int(quick)}"
    rec = stage.main(["--per-digit", "1", "--device", "cpu", "--out", str(out),
                      "--checkpoint", str(tiny_run / "model" / "checkpoint.pt")] + (["--quick"] if quick else []))
    d = out / "b2_6_ddim_steps"
    assert sorted(p.name for p in d.iterdir()) == ["metrics.json", "samples.png", "samples.pt"]
    assert rec.files == [d / name for name in ("samples.png", "metrics.json", "samples.pt")]   # what it reports
    metrics = json.loads((d / "metrics.json").read_text())
    settings = ["ddim_5", "ddim_10", "ddim_20", "ddim_50"] + ([] if quick else ["ddpm_300"])   # b2_5 has DDPM 300
    assert list(metrics) == settings and rec.metrics == metrics
    assert any("leaves out DDPM 300" in n for n in rec.notes) == quick
    assert all(0.0 <= m["class_accuracy"] <= 1.0 and m["n"] == 10 for m in metrics.values())
    s = torch.load(d / "samples.pt", weights_only=True)
    n = len(settings)
    assert s["images"].shape == (10 * n, 1, 28, 28) and 0 <= s["images"].min() and s["images"].max() <= 1
    assert s["labels"].tolist() == list(range(10)) * n and len(s["settings"]) == n


def test_a_stage_run_on_two_backbones_is_one_section_side_by_side():
    ok = run_all.section("a1_6_cfg", "ok")
    bad = run_all.section("a1_6_cfg", "error: no MNIST checkpoint at x")
    assert run_all.side_by_side("a1_6_cfg", {"mnist": ok}) is ok
    both = run_all.side_by_side("a1_6_cfg", {"mnist": ok, "mnist-flow": bad})
    assert both["status"] == bad["status"] and [v["label"] for v in both["variants"]] == ["backbone: mnist",
                                                                                         "backbone: mnist-flow"]
