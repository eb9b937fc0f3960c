"""Bad input on the command line, run as a user runs it: every case ends with a non-zero exit, one line on stderr, no
traceback, and no file under --out changed. Also: two trainers on one folder, a full disk, and a folder in the way.

The stages run in this process, as `python stages/<stage>.py ...` runs them (common.run around main): an exception
that common.run lets through is a traceback, and fails the test. Two cases run the real interpreter.
"""
import hashlib
import importlib
import io
import os
import random
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "stages"))

import common  # noqa: E402
from minidiff import prompts  # noqa: E402
from minidiff.data import release  # noqa: E402
from minidiff.train import _hold  # noqa: E402

TINY = ["--epochs", "1", "--num-hiddens", "8", "--images", "256", "--device", "cpu"]
TRAIN_CLASS, TRAIN_TIME = "b2_4_train_class_conditioned", "b2_2_train_time_conditioned"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A case that got through must fail here, not wait on the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def cli(stage: str, *argv: str) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of `python stages/<stage>.py argv`, run in this process; stage "prompts" is
    `python -m minidiff.prompts`. An exit with a message is code 1 and that message on stderr, as Python does."""
    main = prompts.main if stage == "prompts" else importlib.import_module(stage).main
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            if stage == "prompts":
                main(list(argv))
            else:
                common.run(lambda: main(list(argv)))
            code = 0
        except SystemExit as e:
            code = e.code
    lines = err.getvalue().splitlines()
    if isinstance(code, str):
        lines, code = lines + code.splitlines(), 1
    return code, lines


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder` and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An --out with a tiny time-conditioned and a tiny class-conditioned run; and folders with a checkpoint.pt that
    is a folder, or a snapshot copied over it."""
    root = tmp_path_factory.mktemp("bad_inputs")
    out = root / "out"
    for stage in (TRAIN_TIME, TRAIN_CLASS):
        assert cli(stage, *TINY, "--out", str(out)) == (0, [])
    folder_in_the_way = root / "dir" / TRAIN_CLASS / "checkpoint.pt"
    folder_in_the_way.mkdir(parents=True)
    snapshot = root / "snap" / TRAIN_CLASS
    snapshot.mkdir(parents=True)
    shutil.copy(out / TRAIN_CLASS / "model_epoch1.pt", snapshot / "checkpoint.pt")
    return root


TIME_CKPT = "{root}/out/" + TRAIN_TIME + "/checkpoint.pt"
CLASS_CKPT = "{root}/out/" + TRAIN_CLASS + "/checkpoint.pt"
MNIST = ["--backbone", "mnist", "--checkpoint", CLASS_CKPT, "--device", "cpu", "--quick"]
CASES = [   # (id, stage, arguments ({root}: the fixture's folder; --out {root}/out unless given), in the message)
    ("epochs 0", TRAIN_CLASS, [*TINY, "--epochs", "0"], "--epochs: must be at least 1, got 0"),
    ("epochs -2", TRAIN_CLASS, [*TINY, "--epochs", "-2"], "--epochs: must be at least 1, got -2"),
    ("epochs 1.5", TRAIN_CLASS, [*TINY, "--epochs", "1.5"], "expected a whole number, got '1.5'"),
    ("images 10", TRAIN_CLASS, [*TINY, "--images", "10"], "10 training images are fewer than one batch of 128"),
    ("images 0", TRAIN_CLASS, [*TINY, "--images", "0"], "--images: must be 1 .. 60000, got 0"),
    ("images -5", TRAIN_CLASS, [*TINY, "--images", "-5"], "--images: must be 1 .. 60000, got -5"),
    ("images 70000", TRAIN_CLASS, [*TINY, "--images", "70000"], "--images: must be 1 .. 60000, got 70000"),
    ("num-hiddens 0", TRAIN_CLASS, [*TINY, "--num-hiddens", "0"], "--num-hiddens: must be at least 1, got 0"),
    ("num-hiddens -4", TRAIN_CLASS, [*TINY, "--num-hiddens", "-4"], "--num-hiddens: must be at least 1, got -4"),
    ("ema 1", TRAIN_CLASS, [*TINY, "--ema", "1"], "--ema: must be a finite number ≥ 0 and < 1, got 1"),
    ("ema nan", TRAIN_CLASS, [*TINY, "--ema", "nan"], "--ema: must be a finite number"),
    ("seed 2**64", TRAIN_CLASS, [*TINY, "--seed", str(2**64)], "--seed: must be 0 .. 4294967295"),
    ("seed -1", TRAIN_CLASS, [*TINY, "--seed", "-1"], "--seed: must be 0 .. 4294967295, got -1"),
    ("device meta", TRAIN_CLASS, [*TINY, "--device", "meta"], "device 'meta' holds no data"),
    ("device nonsense", TRAIN_CLASS, [*TINY, "--device", "gpu0"], "device 'gpu0' is not usable here"),
    ("checkpoint.pt a folder", TRAIN_CLASS, [*TINY, "--out", "{root}/dir"], "is a folder, not a checkpoint"),
    ("snapshot as checkpoint", TRAIN_CLASS, [*TINY, "--out", "{root}/snap"], "is a snapshot (the weights of epoch 1)"),
    ("num-samples -3", "b2_3_sample_time_conditioned", ["--quick", "--num-samples", "-3"], "--num-samples: must be"),
    ("autoguidance 0.5", "b2_3_sample_time_conditioned", ["--quick", "--autoguidance", "0.5"],
     "--autoguidance: must be a finite number ≥ 1, got 0.5"),
    ("per-digit -1", "b2_5_sample_class_conditioned", ["--quick", "--per-digit", "-1"], "--per-digit: must be"),
    ("per-digit 0", "b2_5_sample_class_conditioned", ["--quick", "--per-digit", "0"], "--per-digit: must be"),
    ("gamma nan", "b2_5_sample_class_conditioned", ["--quick", "--gamma", "nan"], "--gamma: must be a finite number"),
    ("gamma inf", "fm2_6_sample_class_conditioned", ["--quick", "--gamma", "inf"], "--gamma: must be a finite"),
    ("epoch 0", "b2_5_sample_class_conditioned", ["--quick", "--epoch", "0"], "--epoch: must be at least 1"),
    ("epoch 7", "b2_5_sample_class_conditioned", ["--quick", "--epoch", "7", "--device", "cpu"],
     "no snapshot of epoch 7; this run has epochs [1]"),
    ("time model for b2_5", "b2_5_sample_class_conditioned", ["--quick", "--checkpoint", TIME_CKPT, "--device", "cpu"],
     "holds a time-conditioned DDPM model; this stage samples a class-conditioned DDPM one"),
    ("class model for b2_3", "b2_3_sample_time_conditioned", ["--quick", "--checkpoint", CLASS_CKPT, "--device", "cpu"],
     "holds a class-conditioned DDPM model; this stage samples a time-conditioned DDPM one"),
    ("DDPM model for fm2_6", "fm2_6_sample_class_conditioned", ["--quick", "--checkpoint", CLASS_CKPT, "--device",
                                                                "cpu"], "this stage samples a class-conditioned flow"),
    ("ddim per-digit 0", "b2_6_ddim_steps", ["--quick", "--per-digit", "0"], "--per-digit: must be at least 1"),
    ("flow steps 0", "fm2_3_sample_time_conditioned", ["--quick", "--steps", "0"], "--steps: must be at least 1"),
    ("prompt ²", "a1_5_sampling", [*MNIST, "--prompt", "²"], "prompts are the digits '0'..'9' or ''"),
    ("prompt 12", "a1_5_sampling", [*MNIST, "--prompt", "12"], "prompts are the digits '0'..'9' or ''"),
    ("model ''", "a1_5_sampling", [*MNIST, "--model", ""], "--model: must not be empty"),
    ("IF steps 0", "a0_sampling", [*MNIST, "--steps", "0"], "--steps: must be 1 .. 1000, got 0"),
    ("anagram samples 0", "a1_8_visual_anagrams", [*MNIST, "--num-samples", "0"], "--num-samples: must be at least"),
    ("blur sigma 0", "a1_2_classical_denoising", [*MNIST, "--blur-sigma", "0"], "--blur-sigma: must be a finite "
                                                                                "number > 0, got 0"),
    ("MNIST time checkpoint", "a1_5_sampling", [*MNIST[:2], "--checkpoint", TIME_CKPT, "--device", "cpu"],
     "class-conditioned"),
    ("prompts batch-size 0", "prompts", ["--batch-size", "0", "--cache", "{root}/cache.safetensors"],
     "--batch-size: must be a whole number ≥ 1, got '0'"),
    ("prompts device meta", "prompts", ["--device", "meta", "--cache", "{root}/cache.safetensors", "x"],
     "device 'meta' is not usable here"),
    ("prompts cache a folder", "prompts", ["--cache", "{root}/out", "x"], "is a folder; give a file path"),
]
if not torch.cuda.is_available():
    CASES.append(("device cuda without CUDA", TRAIN_CLASS, [*TINY, "--device", "cuda"], "device 'cuda' is not usable"))
    CASES.append(("prompts device cuda without CUDA", "prompts", ["--device", "cuda", "x"], "device 'cuda' is not"))


@pytest.mark.parametrize("stage, argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(runs, stage, argv, expected):
    argv = [a.replace("{root}", str(runs)) for a in argv]
    if stage != "prompts" and "--out" not in argv:
        argv += ["--out", str(runs / "out")]
    before = files(runs)
    code, lines = cli(stage, *argv)
    assert code != 0 and len(lines) == 1, lines
    assert expected in lines[0] and "Traceback" not in lines[0], lines[0]
    assert files(runs) == before


NUMERIC = [   # every numeric option of the stages, and a generator of values outside its range
    (TRAIN_CLASS, "--epochs"), (TRAIN_CLASS, "--num-hiddens"), (TRAIN_CLASS, "--images"), (TRAIN_CLASS, "--ema"),
    (TRAIN_CLASS, "--seed"), ("b2_3_sample_time_conditioned", "--num-samples"),
    ("fm2_3_sample_time_conditioned", "--autoguidance"),
    ("b2_5_sample_class_conditioned", "--per-digit"), ("b2_5_sample_class_conditioned", "--gamma"),
    ("b2_5_sample_class_conditioned", "--epoch"), ("b2_6_ddim_steps", "--gamma"), ("fm2_3_sample_time_conditioned",
    "--steps"), ("fm2_6_sample_class_conditioned", "--steps"), ("fm2_6_1_without_the_scheduler", "--per-digit"),
    ("fm2_7_flow_vs_ddpm", "--per-digit"), ("a0_sampling", "--steps"), ("a1_8_visual_anagrams", "--num-samples"),
    ("a1_10_hybrid_images", "--num-samples"), ("a1_2_classical_denoising", "--blur-sigma"), ("prompts", "--batch-size"),
]


def bad_values(rng: random.Random, n: int) -> list[str]:
    """Values no numeric option accepts: below every range, not finite, not numbers, numbers in other scripts."""
    pool = ["-1", "-0.5", "nan", "-inf", "inf", "", "abc", "1e999", "٣", "²", "0x10", str(-2**70), "1,5"]
    return [rng.choice(pool) if rng.random() < 0.7 else str(-rng.randint(1, 10**rng.randint(1, 30)))
            for _ in range(n)]


@pytest.mark.parametrize("stage, option", NUMERIC, ids=[f"{s} {o}" for s, o in NUMERIC])
def test_generated_bad_numbers_are_refused_by_argparse(runs, stage, option):
    before = files(runs)
    for value in bad_values(random.Random(f"{stage}{option}"), 12):
        code, lines = cli(stage, f"{option}={value}", *([] if stage == "prompts" else ["--out", str(runs / "out")]))
        assert code == 2 and len(lines) == 1 and f"argument {option}" in lines[0], (value, lines)
    assert files(runs) == before


def test_two_trainers_on_one_folder(tmp_path):
    """A second trainer says in one line which process holds the folder; a lock left by a killed one is taken."""
    out = tmp_path / "out"
    folder = out / TRAIN_CLASS
    folder.mkdir(parents=True)
    held = _hold(folder)                                      # this process plays the first trainer
    try:
        code, lines = cli(TRAIN_CLASS, *TINY, "--out", str(out))
        assert code == 1 and lines == [f"error: {folder} is in use by another training process (PID {os.getpid()}); "
                                       f"wait for it to finish, stop it, or choose another --out"]
    finally:
        release(held)
    assert not (folder / "training.lock").exists()            # released: the file goes with the lock
    (folder / "training.lock").write_text("4194303\n")        # what a trainer killed with -9 leaves behind
    assert cli(TRAIN_CLASS, *TINY, "--out", str(out)) == (0, [])
    assert not (folder / "training.lock").exists() and (folder / "checkpoint.pt").is_file()


def test_a_folder_named_like_an_output_is_one_line(runs, tmp_path):
    """samples.pt a folder: the figures before it are written, then one line says what is in the way."""
    out = tmp_path / "out"
    shutil.copytree(runs / "out" / TRAIN_CLASS, out / TRAIN_CLASS)
    (out / "b2_5_sample_class_conditioned" / "samples.pt").mkdir(parents=True)
    code, lines = cli("b2_5_sample_class_conditioned", "--quick", "--per-digit", "1", "--device", "cpu",
                      "--out", str(out))
    assert code == 1 and len(lines) == 1 and "a folder of that name is in the way" in lines[0], lines


LIMITED = """
import os, resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))    # as `python stages/<stage>.py` does
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_is_one_line_leaves_no_temporary_file_and_the_rerun_finishes(tmp_path):
    """The real interpreter, with files limited to 4 kB (the first snapshot does not fit): one line naming the file,
    no temporary file left, nothing claimed; without the limit the same command then finishes."""
    script = tmp_path / "limited.py"
    script.write_text(LIMITED)
    out = tmp_path / "out"
    command = [str(REPO / "stages" / f"{TRAIN_CLASS}.py"), *TINY, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run([sys.executable, str(script), *command], capture_output=True, text=True, env=env,
                          timeout=300)
    folder = out / TRAIN_CLASS
    assert full.returncode == 1 and full.stderr.splitlines() == [full.stderr.strip()], full.stderr
    assert full.stderr.startswith(f"error: could not write {folder / 'model_epoch1.pt'} (") and "wrote" not in full.stdout
    assert sorted(p.name for p in folder.iterdir()) == []     # no .tmp, no lock, no checkpoint claiming the epoch
    again = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    wrote = [line.split(" ", 1)[1] for line in again.stdout.splitlines() if line.startswith("wrote ")]
    assert wrote and all((REPO / w if not Path(w).is_absolute() else Path(w)).is_file() for w in wrote)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(runs, tmp_path):
    out = tmp_path / "out"
    (out / TRAIN_CLASS).mkdir(parents=True)
    (out / TRAIN_CLASS).chmod(0o500)
    try:
        code, lines = cli(TRAIN_CLASS, *TINY, "--out", str(out))
    finally:
        (out / TRAIN_CLASS).chmod(0o700)
    assert code == 1 and len(lines) == 1 and "Permission denied" in lines[0], lines
