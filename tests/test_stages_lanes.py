"""run_all --jobs 2: stages in two lanes side by side (stages/lanes.py), and what each lane runs."""
import argparse
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "stages"))

import lanes  # noqa: E402
import run_all  # noqa: E402


def fake_stage(stage: str, args, extra: list) -> dict:
    """A stand-in for run_all.run_stage, run in a lane's process: 'die' kills the process as a crash would."""
    if stage == "die":
        os._exit(3)
    print(f"ran {stage} {extra}")
    return {"status": "ok", "seconds": 0.5, "notes": [f"{stage} ran on {torch.get_num_threads()} thread(s)"]}


def test_lanes_run_side_by_side_and_a_dead_lane_fails_its_remaining_stages(tmp_path, capsys):
    args = argparse.Namespace(out=tmp_path, device="cpu")
    done = lanes.run({"a": [("s1", [], ""), ("s2", ["--backbone", "x"], "x")],
                      "b": [("s3", [], ""), ("die", [], ""), ("s4", [], "")]},
                     args, {"a": ("mlp",)}, fake_stage, lambda stage, status: {"status": status})
    assert set(done) == {("s1", ""), ("s2", "x"), ("s3", ""), ("die", ""), ("s4", "")}
    assert all(done[k]["status"] == "ok" for k in [("s1", ""), ("s2", "x"), ("s3", "")])
    for k in [("die", ""), ("s4", "")]:            # the crash and what came after it in its lane
        assert done[k]["status"] == f"failed (the b lane's process ended with exit code 3; see {tmp_path}/logs/b.log)"
    log_a = (tmp_path / "logs" / "a.log").read_text()
    assert log_a.startswith("the mlp judge: 50.00 % on the MNIST test set")     # the session's cached judge (conftest)
    assert "ran s1 []" in log_a and "ran s2 ['--backbone', 'x']" in log_a and "ran s3" not in log_a
    printed = capsys.readouterr().out
    assert "[a] s2 (x): ok, 0.5 s\n    s2 ran on 1 thread(s)" in printed    # this process shows each finished stage
    assert printed.index("[a] s1") < printed.index("[a] s2") and "[b] s3: ok" in printed


def test_two_lanes_run_every_stage_once_and_part_a_on_each_model():
    groups = run_all.part_b_stages("both")
    flow_backbone = {"mnist-flow": ["--checkpoint", "f.pt"]}
    plan = run_all.two_lanes(groups, {"mnist": []}, flow_backbone)
    part_b = [stage for tasks in plan.values() for stage, _, backbone in tasks if not backbone]
    assert sorted(part_b + run_all.BOTH) == sorted(s for stages in groups.values() for s in stages)   # fm2_7: after
    assert [s for s, _, _ in plan["ddpm"]][:len(groups["ddpm"])] == groups["ddpm"]             # the course's order
    for lane, backbone in (("ddpm", "mnist"), ("flow", "mnist-flow")):
        part_a = [(stage, extra) for stage, extra, name in plan[lane] if name == backbone]
        assert [stage for stage, _ in part_a] == [s for s in run_all.PART_A if s not in run_all.DEEPFLOYD_ONLY]
        assert all(extra[:2] == ["--backbone", backbone] for _, extra in part_a)
    assert ("a1_6_cfg", ["--backbone", "mnist-flow", "--checkpoint", "f.pt"], "mnist-flow") in plan["flow"]
    only_b = run_all.two_lanes(groups, {}, flow_backbone)           # --only B: no Part A in either lane
    assert all(not backbone for tasks in only_b.values() for _, _, backbone in tasks)
