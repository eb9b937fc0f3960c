"""Every stage in report order, then outputs/report.html: one page with every figure.

Part B runs first (it trains the MNIST model that Part A's mnist backbone uses), then Part A with the best backbone
available, decided once (--backbone auto: DeepFloyd IF when its weights are downloaded, else the MNIST model; it
prints which and why), and again on the MNIST flow-matching model when it is trained (into <out>/mnist-flow/;
the page shows both side by side). Part B comes in the two versions of the course (--part-b): the fall 2024
report's DDPM and the flow matching of the course since 2025; both by default, the shared Part 1 once. The page lays
the sections out in the courses' order: 5A, then 5B (DDPM), then 5B (flow matching). A stage that fails does not
stop the run: its section in the page says why.

Two lanes (--jobs 2, the default on a CPU with two or more cores when both versions of Part B run; lanes.py says
why): the DDPM version with Part A on its model, and the flow-matching version with Part A on its model, side by side
in two processes on half of the cores each; then fm2_7, which samples both models. The judges that measure samples
train first, the CNN in one lane and the two others in the other. A stage's floats depend on how many threads share
its sums: the same seed gives the same result for the same --jobs, and close to it for the other.
"""
import ast
import importlib
import time
import traceback
from pathlib import Path

import common
import lanes
import part_a
from minidiff import viz

PART_A = ["a0_sampling", "a1_1_forward", "a1_2_classical_denoising", "a1_3_one_step_denoising",
          "a1_3_1_visualizing_velocity", "a1_4_iterative_denoising", "a1_5_sampling", "a1_6_cfg", "a1_7_image_to_image",
          "a1_7_1_hand_drawn_and_web", "a1_7_2_inpainting", "a1_7_3_text_conditioned", "a1_8_visual_anagrams",
          "a1_10_hybrid_images"]
PART_1 = ["b1_2_noising", "b1_2_1_train_denoiser", "b1_2_2_out_of_distribution"]     # in both versions of Part B
PART_B = {   # --part-b version -> its stages after Part 1, in the course's order
    "ddpm": ["b2_2_train_time_conditioned", "b2_3_sample_time_conditioned", "b2_4_train_class_conditioned",
             "b2_5_sample_class_conditioned", "b2_6_ddim_steps"],
    "flow": ["fm1_2_3_denoising_pure_noise", "fm2_2_train_time_conditioned", "fm2_3_sample_time_conditioned",
             "fm2_5_train_class_conditioned", "fm2_6_sample_class_conditioned", "fm2_6_1_without_the_scheduler"],
}
BOTH = ["fm2_7_flow_vs_ddpm"]      # needs both versions' class-conditioned models
HEADINGS = {"A": "Part A: the power of diffusion models (and of flows)", "ddpm": "Part B, fall 2024: DDPM on MNIST",
            "flow": "Part B, 2025 on: flow matching on MNIST"}
DEEPFLOYD_ONLY = {"a0_sampling"}   # Part 0 samples text-to-image with stage I + II: nothing to show for MNIST
LANE_JUDGES = {"ddpm": ("cnn",), "flow": ("mlp", "far")}   # --jobs 2: trained first (the CNN as long as the others)


def docstring(stage: str) -> str:
    return ast.get_docstring(ast.parse((common.REPO / "stages" / f"{stage}.py").read_text())) or ""


def section(stage: str, status: str, command: str = "", seconds=None, rec=None) -> dict:
    """A section of the HTML report (viz.write_report)."""
    return {"title": f"{stage}: {docstring(stage).splitlines()[0]}", "text": docstring(stage), "status": status,
            "command": command, "seconds": seconds, "files": rec.files if rec else [],
            "notes": rec.notes if rec else [], "metrics": rec.metrics if rec else None}


def side_by_side(stage: str, variants: dict[str, dict]) -> dict:
    """One section for a stage run on several backbones (backbone name -> its section), the first one's status."""
    if len(variants) == 1:
        return next(iter(variants.values()))
    statuses = [v["status"] for v in variants.values()]
    status = next((st for st in statuses if not st.startswith(("ok", "skipped"))), statuses[0])
    return {**section(stage, status), "variants": [{**v, "label": f"backbone: {name}"} for name, v in variants.items()]}


def part_b_stages(version: str) -> dict[str, list[str]]:
    """--part-b ddpm | flow | both -> {heading key: stages in run order}; Part 1 runs once, with the first version."""
    versions = ["ddpm", "flow"] if version == "both" else [version]
    groups = {v: ([] if i else PART_1) + PART_B[v] for i, v in enumerate(versions)}
    if version == "both":
        groups["flow"] += BOTH
    return groups


def run_stage(stage: str, args, extra: list[str]) -> dict:
    """Run one stage's main() in this process, as `python stages/<stage>.py ...` would: importing torch once
    instead of once per stage saves seconds a stage, and every stage seeds its own generators, so the results are
    the same. A stage that fails is reported and the run goes on; Ctrl-C stops the whole run."""
    argv = ["--out", str(args.out), "--device", args.device, "--seed", str(args.seed)] + \
        (["--quick"] if args.quick else []) + extra
    command = f"python stages/{stage}.py " + " ".join(argv)
    print(f"\n=== {stage}", flush=True)
    start = time.perf_counter()
    rec, status = None, "ok"
    try:
        rec = importlib.import_module(stage).main(argv)
        common.show(rec)
    except common.USER_ERRORS as e:                     # bad input or a missing model: its one-line message
        status = f"error: {common.one_line(e)}"
    except SystemExit as e:                            # argparse refused the arguments (its message is above)
        status = f"error: the arguments were refused (exit status {e.code})"
    except Exception as e:                             # a bug, not bad input: show it, go on with the others
        traceback.print_exc()
        status = f"failed ({type(e).__name__}: {common.one_line(e)})"
    if status != "ok":
        print(status)
    return section(stage, status, command, time.perf_counter() - start, rec)


def part_a_tasks(backbones: dict[str, list[str]]) -> list[tuple[str, list[str], str]]:
    """Part A's stages on each backbone (name -> its extra arguments), stage by stage: (stage, arguments, backbone).
    Part 0 runs on DeepFloyd only."""
    return [(stage, ["--backbone", name, *extra], name) for stage in PART_A for name, extra in backbones.items()
            if stage not in DEEPFLOYD_ONLY or name == "deepfloyd"]


def two_lanes(groups: dict[str, list[str]], backbones: dict[str, list[str]], flow_backbone: dict[str, list[str]]
              ) -> dict[str, list[tuple[str, list[str], str]]]:
    """--jobs 2: each version of Part B (groups: part_b_stages("both")), then Part A on its model: the DDPM lane on
    `backbones` (none: no Part A), the flow lane on `flow_backbone`. BOTH runs after the two."""
    return {"ddpm": [(s, [], "") for s in groups["ddpm"]] + part_a_tasks(backbones),
            "flow": [(s, [], "") for s in groups["flow"] if s not in BOTH] + (part_a_tasks(flow_backbone)
                                                                              if backbones else [])}


def main():
    p = common.parser(__doc__)
    p.add_argument("--backbone", choices=("auto", *part_a.BACKBONES), default="auto",
                   help="the Part A backbone (default: deepfloyd when available, else mnist)")
    p.add_argument("--only", choices=("A", "B"), help="run only Part A or Part B")
    p.add_argument("--part-b", choices=("ddpm", "flow", "both"), default="both",
                   help="Part B's version: the fall 2024 report's DDPM, the 2025 course's flow matching, or both "
                        "(default)")
    p.add_argument("--jobs", type=int, choices=(1, 2),
                   help="2: the two versions of Part B side by side, each with Part A on its model (default on a CPU "
                        "with 2+ cores when both run); 1: every stage in turn")
    args = p.parse_args()
    jobs = args.jobs or (2 if args.only != "A" and args.part_b == "both" and lanes.parallel(args.device) else 1)
    if jobs == 2 and (args.only == "A" or args.part_b != "both"):
        p.error("--jobs 2 runs the two versions of Part B side by side: it needs both (--part-b both, not --only A)")
    total = time.perf_counter()
    backbone, why = args.backbone, ""
    if backbone == "auto" and args.only != "B":      # decide once, offline and cheaply (looks for files only)
        backbone, why = part_a.auto_backbone()
        print(f"Part A backbone: {backbone}" + (f" ({why})" if why else ""))
    groups = {} if args.only == "A" else part_b_stages(args.part_b)     # heading -> its Part B stages
    backbones = {} if args.only == "B" else {backbone: []}               # Part A's backbones -> their extra arguments
    flow_model = Path(args.out) / part_a.MNIST_CHECKPOINT["mnist-flow"]     # trained below, or by an earlier run
    flow_backbone = {"mnist-flow": ["--out", str(Path(args.out) / "mnist-flow"), "--checkpoint", str(flow_model)]}
    if jobs == 2:
        done = lanes.run(two_lanes(groups, backbones, flow_backbone), args, LANE_JUDGES, run_stage, section)
        done |= {(s, ""): run_stage(s, args, []) for s in BOTH}
        backbones |= flow_backbone if backbones else {}
    else:
        done = {(s, ""): run_stage(s, args, []) for stages in groups.values() for s in stages}
        if backbones and flow_model.is_file():       # Part A again on the flow model, in <out>/mnist-flow/
            backbones |= flow_backbone
        done |= {(stage, name): run_stage(stage, args, extra) for stage, extra, name in part_a_tasks(backbones)}
    done |= {(stage, name): section(stage, f"skipped: Part 0 needs DeepFloyd IF (stage I + II), not the {name} "
                                           f"backbone. {why}")
             for stage in DEEPFLOYD_ONLY for name in backbones if name != "deepfloyd"}
    part_a_sections = [side_by_side(stage, {name: done[(stage, name)] for name in backbones})
                       for stage in ([] if args.only == "B" else PART_A)]
    groups = {"A": part_a_sections, **{part: [done[(s, "")] for s in stages] for part, stages in groups.items()}}
    sections = [{**s, "part": HEADINGS[part]} for part, group in groups.items() for s in group]
    seconds = time.perf_counter() - total
    failed = [s["title"].split(":")[0] for s in sections if not s["status"].startswith(("ok", "skipped"))]
    intro = (f"Fun with Diffusion Models, reproduced by minidiff. Profile: {'quick (CPU)' if args.quick else 'report'};"
             f" seed {args.seed}; Part A backbones: {', '.join(backbones)}{f' ({why})' if why else ''};"
             f" {'two lanes side by side' if jobs == 2 else 'one stage at a time'}; total {seconds / 60:.1f} min."
             + (f" Failed: {', '.join(failed)}." if failed else ""))
    rec = common.Record(Path(args.out))
    rec.wrote(viz.write_report(sections, rec.out / "report.html", "minidiff: Fun with Diffusion Models", intro))
    print(f"\nall stages done in {seconds / 60:.1f} min" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        common.show(rec)
        raise SystemExit(1)
    return rec


if __name__ == "__main__":
    common.run(main)
