"""Every stage in report order, then outputs/report.html: one page with every figure.

Part B first (it trains the MNIST model that Part A's mnist backbone uses), then Part A with the best backbone
available, decided once (--backbone auto: DeepFloyd IF when its weights are downloaded, else the MNIST model; it
prints which and why). A stage that fails does not stop the run: its section in the page says why.
"""
import ast
import contextlib
import io
import json
import runpy
import sys
import time
import traceback
from pathlib import Path

import common
from minidiff import viz

PART_B = ["b1_2_noising", "b1_2_1_train_denoiser", "b1_2_2_out_of_distribution", "b2_2_train_time_conditioned",
          "b2_3_sample_time_conditioned", "b2_4_train_class_conditioned", "b2_5_sample_class_conditioned",
          "b2_6_ddim_steps"]
PART_A = ["a0_sampling", "a1_1_forward", "a1_2_classical_denoising", "a1_3_one_step_denoising",
          "a1_4_iterative_denoising", "a1_5_sampling", "a1_6_cfg", "a1_7_image_to_image",
          "a1_7_1_hand_drawn_and_web", "a1_7_2_inpainting", "a1_7_3_text_conditioned", "a1_8_visual_anagrams",
          "a1_10_hybrid_images"]
DEEPFLOYD_ONLY = {"a0_sampling"}   # Part 0 samples text-to-image with stage I + II: nothing to show for MNIST


def docstring(stage: str) -> str:
    return ast.get_docstring(ast.parse((common.REPO / "stages" / f"{stage}.py").read_text())) or ""


class _Tee(io.TextIOBase):
    """Echo everything written to the terminal and keep a copy of the lines (the report lists the files)."""

    def __init__(self, terminal):
        self.terminal, self.text = terminal, io.StringIO()

    def write(self, s: str) -> int:
        self.terminal.write(s)
        self.terminal.flush()
        return self.text.write(s)


def run_stage(stage: str, args, extra: list[str]) -> dict:
    """Run one stage as `python stages/<stage>.py ...` would, but in this process: importing torch once instead
    of once per stage saves about 5 s a stage. Every stage seeds its own generators, so the results are the same.
    A stage that fails is reported and the run goes on; Ctrl-C stops the whole run."""
    argv = ["--out", str(args.out), "--device", args.device, "--seed", str(args.seed)] + \
        (["--quick"] if args.quick else []) + extra
    path = common.REPO / "stages" / f"{stage}.py"
    print(f"\n=== {stage}", flush=True)
    start = time.perf_counter()
    tee, saved_argv = _Tee(sys.stdout), sys.argv
    sys.argv = [str(path)] + argv
    try:
        with contextlib.redirect_stdout(tee):
            try:
                runpy.run_path(str(path), run_name="__main__")
                code = 0
            except SystemExit as e:                        # common.run ends bad input with sys.exit("error: ...")
                if isinstance(e.code, str) and e.code.startswith("interrupted"):
                    raise
                code = e.code
                if isinstance(code, str):
                    print(code)
            except Exception:                              # a bug, not bad input: show it, go on with the others
                traceback.print_exc(file=sys.stdout)
                code = 1
    finally:
        sys.argv = saved_argv
    seconds = time.perf_counter() - start
    lines = tee.text.getvalue().splitlines()
    files = [Path(l[len("wrote "):]) for l in lines if l.startswith("wrote ")]
    files = [f if f.is_absolute() else common.REPO / f for f in files]
    status = "ok" if code in (0, None) else next(
        (l for l in reversed(lines) if l.startswith("error:")), f"failed ({lines[-1] if lines else code})")
    notes = [l for l in lines if l.startswith("backbone:") or ("class accuracy" in l)]
    metrics_file = Path(args.out) / stage / "metrics.json"
    return {"title": f"{stage}: {docstring(stage).splitlines()[0]}", "text": docstring(stage),
            "status": status, "notes": notes,
            "seconds": seconds, "files": files, "command": f"python stages/{stage}.py " + " ".join(argv),
            "metrics": json.loads(metrics_file.read_text()) if metrics_file.exists() and status == "ok" else None}


def main():
    p = common.parser(__doc__)
    p.add_argument("--backbone", choices=("auto", "deepfloyd", "mnist"), default="auto",
                   help="the Part A backbone (default: deepfloyd when available, else mnist)")
    p.add_argument("--only", choices=("A", "B"), help="run only Part A or Part B")
    args = p.parse_args()
    total = time.perf_counter()
    backbone, why = args.backbone, ""
    if backbone == "auto" and args.only != "B":      # decide once, offline and cheaply (looks for files only)
        from minidiff import deepfloyd
        reason = deepfloyd.unavailable_reason(deepfloyd.STAGE1_SOURCE, deepfloyd.STAGE2_SOURCE)
        backbone, why = ("deepfloyd", "") if reason is None else ("mnist", f"DeepFloyd IF not available: {reason}")
        print(f"Part A backbone: {backbone}" + (f" ({why})" if why else ""))
    sections = []
    for stage in ([] if args.only == "A" else PART_B):
        sections.append(run_stage(stage, args, []))
    for stage in ([] if args.only == "B" else PART_A):
        if stage in DEEPFLOYD_ONLY and backbone == "mnist":
            sections.append({"title": f"{stage}: {docstring(stage).splitlines()[0]}", "text": docstring(stage),
                             "status": f"skipped: Part 0 needs DeepFloyd IF (stage I + II); Part A ran with the "
                                       f"MNIST backbone. {why}", "files": [], "command": ""})
            continue
        sections.append(run_stage(stage, args, ["--backbone", backbone]))
    seconds = time.perf_counter() - total
    failed = [s["title"].split(":")[0] for s in sections if not s["status"].startswith(("ok", "skipped"))]
    intro = (f"Fun with Diffusion Models, reproduced by minidiff. Profile: {'quick (CPU)' if args.quick else 'report'};"
             f" seed {args.seed}; Part A backbone: {backbone}{f' ({why})' if why else ''}; total {seconds / 60:.1f} min."
             + (f" Failed: {', '.join(failed)}." if failed else ""))
    page = viz.write_report(sections, Path(args.out) / "report.html", "minidiff: Fun with Diffusion Models", intro)
    print(f"\nall stages done in {seconds / 60:.1f} min" + (f"; failed: {', '.join(failed)}" if failed else ""))
    print(f"report: {page.resolve()}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    common.run(main)
