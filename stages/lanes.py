"""Lists of stages side by side, one process per list (a lane), each on an equal share of the CPU's threads.

Why (run_all.py --jobs 2): the MNIST models are small (D = 16, batches of 64), and one training step cannot keep two
cores busy: its many small convolutions, normalizations and GELUs each split into two halves too small to pay for
the split. Two trainings side by side, one thread each, train about 1.4x as many digits per second as one training on
two threads (README: Benchmarks).

A lane is a fresh process (spawn: nothing inherited from this one's thread pool) that trains the judges it is given
(minidiff.evaluate; a judge another process is training is waited for, never trained twice), then runs its stages in
order, printing their output to <out>/logs/<lane>.log. This process prints a line per finished stage, with its notes,
as the lanes report them. Every stage seeds its own generators, so what runs beside it does not change its result.
"""
from __future__ import annotations

import contextlib
import multiprocessing
from multiprocessing import connection
from pathlib import Path

import torch

import common
from minidiff import evaluate


def parallel(device: str) -> bool:
    """Whether lanes pay on `device`: the CPU, with at least two threads to share."""
    return common.device(device).type == "cpu" and torch.get_num_threads() >= 2


def lane(name: str, tasks: list, args, run_stage, threads: int, judges: tuple, results) -> None:
    """One lane's process: `threads` threads, its `judges` trained first, then its tasks (stage, arguments, backbone)
    through run_stage (run_all.run_stage), each one's (stage, backbone, section) sent on the pipe `results` when done.
    Ctrl-C ends it quietly (a training keeps its last checkpoint)."""
    torch.set_num_threads(threads)
    with open(Path(args.out) / "logs" / f"{name}.log", "w", buffering=1) as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            for kind in judges:
                try:
                    dev = common.device(args.device)
                    accuracy = evaluate.judge(kind, device=dev, bf16=common.native_bf16(dev)).test_accuracy
                    print(f"the {kind} judge: {100 * accuracy:.2f} % on the MNIST test set")
                except common.USER_ERRORS as e:      # the stages that need it say so, one line each
                    print(f"the {kind} judge: {common.one_line(e)}")
            for stage, extra, backbone in tasks:
                results.send((stage, backbone, run_stage(stage, args, extra)))
        except KeyboardInterrupt:
            pass


def run(lanes: dict[str, list], args, judges: dict[str, tuple], run_stage, section) -> dict:
    """Each lane's tasks (stage, arguments, backbone) in a process of its own, side by side; `judges`: the judges each
    lane trains first. Returns {(stage, backbone): its section (run_all.run_stage)}. A lane whose process dies fails
    the stages it did not finish: section(stage, status) (run_all.section) says so."""
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // len(lanes))
    logs = Path(args.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"lanes {' and '.join(lanes)} side by side, {threads} thread{'s' * (threads > 1)} each; their stages' output "
          f"goes to {common.shown(logs)}/<lane>.log", flush=True)
    procs, pipes = {}, {}
    for name, tasks in lanes.items():
        reader, writer = ctx.Pipe(duplex=False)
        procs[name] = ctx.Process(target=lane, daemon=True,
                                  args=(name, tasks, args, run_stage, threads, judges.get(name, ()), writer))
        procs[name].start()
        writer.close()                               # the lane holds the only writer: its end closes when it ends
        pipes[reader] = name
    done, left = {}, {name: list(tasks) for name, tasks in lanes.items()}
    try:
        while pipes:
            for reader in connection.wait(list(pipes)):
                name = pipes[reader]
                try:
                    stage, backbone, sec = reader.recv()
                except EOFError:                     # the lane ended: what it did not finish failed
                    del pipes[reader]
                    procs[name].join()
                    for stage, _, backbone in left[name]:
                        done[(stage, backbone)] = section(stage, f"failed (the {name} lane's process ended with exit "
                                                                 f"code {procs[name].exitcode}; see {logs / name}.log)")
                    continue
                left[name].pop(0)
                done[(stage, backbone)] = sec
                print(f"[{name}] {stage}{f' ({backbone})' if backbone else ''}: {sec['status']}, "
                      f"{sec['seconds']:.1f} s", flush=True)
                for note in sec["notes"]:
                    print(f"    {note}", flush=True)
    except KeyboardInterrupt:                        # the lanes had the Ctrl-C too: let them stop, then make sure
        for p in procs.values():
            p.join(timeout=10)
            p.terminate()
        raise
    return done
