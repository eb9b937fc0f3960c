"""The benchmark driver (the benchmarks themselves take minutes: `python tools/bench.py all`; no timing is
asserted anywhere in the tests)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import bench  # noqa: E402


def test_main_prints_a_table_and_writes_json_with_the_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench.BENCHES, "unet", lambda: [{"bench": "unet", "impl": "minidiff", "min_ms": 1.5}])
    rows = bench.main(["unet", "--json", str(tmp_path / "b.json")])
    assert json.loads((tmp_path / "b.json").read_text()) == rows
    assert rows[0]["bench"] == "machine" and rows[0]["cores"] >= 1 and rows[0]["torch"] and "total_s" in rows[0]
    assert rows[1:] == [{"bench": "unet", "impl": "minidiff", "min_ms": 1.5}]
    printed = capsys.readouterr().out
    assert "impl" in printed and "minidiff" in printed and f"wrote {tmp_path / 'b.json'}" in printed


def test_best_seconds_times_a_slow_path_once(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "_seconds", lambda fn: calls.append(1) or 30.0)     # every run "takes" 30 s
    assert bench._best_seconds(lambda: None, repeats=3, budget_s=20.0) == 30.0
    assert len(calls) == 1                                                          # one timed run after warm-up
    calls.clear()
    monkeypatch.setattr(bench, "_seconds", lambda fn: calls.append(1) or 0.5)
    bench._best_seconds(lambda: None, repeats=3, budget_s=20.0)
    assert len(calls) == 3


def test_the_lanes_bench_trains_in_one_process_then_two_side_by_side():
    rows = bench.bench_lanes(steps=2)
    assert [r["processes"] for r in rows] == [1, 2] and len(rows[1]["images_per_s_each"]) == 2
    for r in rows:
        assert abs(r["images_per_s_together"] - sum(r["images_per_s_each"])) <= 1 and r["threads_each"] >= 1
    assert rows[1]["speedup"] == round(rows[1]["images_per_s_together"] / rows[0]["images_per_s_together"], 2)
