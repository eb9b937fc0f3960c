"""tools/quality.py on tiny runs: each row's figures are the judges' own, a rerun reuses the cached trainings, and
the curve's figure is drawn. (The real runs take half an hour; the README quotes them.)"""
import dataclasses
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))


def tiny(monkeypatch):
    import quality
    monkeypatch.setattr(quality, "PER_DIGIT", 2)
    monkeypatch.setattr(quality, "IMAGES", 256)
    monkeypatch.setattr(quality, "CURVE", ((1, 128), (2, 256)))
    monkeypatch.setattr(quality, "LEVERS", {"base": {}, "no EMA": {"ema": 0.0}})
    monkeypatch.setattr(quality, "GUIDANCE", ((5.0, 1.0), (5.0, 0.5), (3.0, 1.0)))
    monkeypatch.setattr(quality, "TIME_LEVERS", {"base": {}, "2 epochs": {"epochs": 2}})
    monkeypatch.setattr(quality, "AUTOGUIDANCE_WS", (1.0, 3.0))
    quick = {k: dataclasses.replace(cfg, num_hiddens=2, batch_size=64) for k, cfg in quality.part_b.QUICK.items()}
    monkeypatch.setattr(quality.part_b, "QUICK", quick)
    monkeypatch.setattr(quality.part_b, "QUICK_FLOW_STEPS", 3)
    return quality


def test_rows_are_the_judges_figures_and_a_rerun_reuses_the_trainings(tmp_path, monkeypatch):
    quality = tiny(monkeypatch)
    rows = quality.main(["all", "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "q.json"),
                         "--plot", str(tmp_path / "q.png")])
    curve = [r for r in rows if r["bench"] == "curve"]
    levers = [r for r in rows if r["bench"] == "lever"]
    time_only = [r for r in rows if r["bench"] == "time"]
    guided = [r for r in rows if r["bench"] == "guidance"]
    rates = [r for r in rows if r["bench"] == "rate"]
    autoguided = [r for r in rows if r["bench"] == "autoguidance"]
    assert [(r["model"], r["epochs"], r["gamma"]) for r in curve] == [
        (m, e, g) for m in ("class", "flow_class") for e in (0.5, 2) for g in quality.CURVE_GAMMAS]
    assert [r["lever"] for r in levers] == ["base", "no EMA"]
    assert [(r["lr"], r["lr_schedule"]) for r in rates] == [(1e-2, "one-cycle"), (1e-2, "exponential"),
                                                            (3e-3, "exponential")]
    assert quality.part_b.QUICK["class"].lr == 1e-2 and quality.part_b.QUICK["class"].lr_schedule == "one-cycle"
    same = [k for k in levers[0] if k not in ("bench", "lever")]  # the profile's rate is the base lever's run
    assert {k: rates[0][k] for k in same} == {k: levers[0][k] for k in same}
    assert [(r["model"], r["lever"]) for r in time_only] == [
        (m, lever) for m in ("time", "flow_time") for lever in ("base", "2 epochs")]
    assert [(r["model"], r["epochs"], r["gamma"], r["guide_below"]) for r in guided] == [
        (m, e, g, b) for m, e in (("class", 4), ("flow_class", 2)) for g, b in quality.GUIDANCE]
    flow_curve = [r for r in curve if r["model"] == "flow_class" and r["epochs"] == 2 and r["gamma"] == 5]
    same = [k for k in guided[3] if k != "bench"]           # the curve's flow model and samples, reused: no retraining
    assert {k: guided[3][k] for k in same} == {k: flow_curve[0][k] for k in same}
    for r in curve + levers + guided + rates:
        assert r["n"] == 20 and 0 <= r["class_accuracy"] <= 1 and 0 <= r["mlp_accuracy"] <= 1
    assert [(r["model"], r["autoguidance"]) for r in autoguided] == [
        (m, w) for m in ("time", "flow_time") for w in (1.0, 3.0)]
    for plain, guided in zip(autoguided[::2], autoguided[1::2]):     # one run (its epoch 1 kept), sampled two ways
        assert plain["train_minutes"] == guided["train_minutes"] and plain["frechet"] != guided["frechet"]
    for r in time_only + autoguided:         # nothing asked for: no accuracy, the confidence in its best guess
        assert r["n"] == 20 and r["gamma"] is r["class_accuracy"] is r["mlp_accuracy"] is None
        assert 0.1 <= r["confidence"] <= 1
    for r in rows:
        assert r["frechet_over_floor"] == r["frechet"] / r["floor"] and r["train_minutes"] > 0
    assert levers[0]["images_per_s"] > 0
    assert json.loads((tmp_path / "q.json").read_text()) == json.loads(json.dumps(rows))
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same model and noise give the same samples: the judges' figures of a rerun are equal
    checkpoints = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/checkpoint.pt")}
    assert len(checkpoints) == 4 + 1 + 2 + 1 + 4 + 2   # "base" and the profile's rate: the curve's class model at 2
    #                                                   epochs; the guidance bench's flow model: the curve's too
    again = quality.main(["all", "--out", str(tmp_path / "runs")])
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints           # nothing retrained
    assert again == rows


def test_each_lever_changes_only_what_it_names(tmp_path, monkeypatch):
    quality = tiny(monkeypatch)
    seen = []
    monkeypatch.setattr(quality, "point", lambda cfg, n, *args: seen.append((cfg, n)) or {})
    quality.levers(tmp_path, None, 0, torch.device("cpu"))
    base = dataclasses.replace(quality.part_b.QUICK["class"], seed=0, snapshot_epochs=(), epochs=quality.LEVERS_EPOCHS,
                               bf16=quality.common.native_bf16(torch.device("cpu")))
    assert seen == [(base, 256), (dataclasses.replace(base, ema=0.0), 256)]
