"""The Part A stages end to end on the DeepFloyd backbone, without the Hub: a tiny random IF stage I (20 px, with
T5 and a trained sentencepiece model) and stage II (40 px) as local Hub-layout folders (test_deepfloyd.py), run
through `--backbone deepfloyd --model <folder> --stage2 <folder> --device cpu`: Part 0, CFG, SDEdit, inpainting,
anagrams, hybrids. Checks the files written, samples.pt shapes and ranges, determinism, and the one-line errors
of the command line (subprocess: exit code, last stderr line "error: ...", no traceback)."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minidiff import hub
from minidiff import prompts as P

from test_deepfloyd import write_if_folders

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
sys.path.insert(0, str(REPO / "stages"))



@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(stage I folder, stage II folder, prompt cache path), shared by the module so T5 runs once per prompt."""
    root = tmp_path_factory.mktemp("if-stages")
    one, two = write_if_folders(root)
    return one, two, root / "prompt_embeds.safetensors"


@pytest.fixture
def run(env, monkeypatch, tmp_path):
    """run(stage, *args) -> the stage's record (rec.out: its output folder), after main() with the tiny IF folders
    on the CPU."""
    one, two, cache = env
    monkeypatch.setenv(P.CACHE_ENV, str(cache))

    def run(stage: str, *args: str, out: Path = tmp_path / "out"):
        module = importlib.import_module(stage)
        return module.main(["--backbone", "deepfloyd", "--model", str(one), "--stage2", str(two), "--device", "cpu",
                            "--out", str(out), *args])
    return run


def check_samples(folder: Path, n_min: int, size: int) -> dict:
    d = torch.load(folder / "samples.pt")
    images = d["images"]
    assert images.dtype == torch.float32 and images.shape[0] >= n_min and images.shape[1:] == (3, size, size)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert len(d["prompts"]) == images.shape[0]
    return d


def test_part0_sampling_is_deterministic(run, tmp_path):
    """The report's three prompts at two step settings (the defaults 5, 10, 20 only cost more)."""
    rec = run("a0_sampling", "--steps", "2", "3", out=tmp_path / "first")
    out = rec.out
    for n in (2, 3):
        assert (out / f"samples_{n}_steps.png").stat().st_size > 0
    d = check_samples(out, 6, 40)                                       # stage II: the tiny IF-II's 40 px
    assert d["images"].shape[0] == 6 and d["stage1"].shape == (6, 3, 20, 20)
    assert d["num_inference_steps"].tolist() == [2] * 3 + [3] * 3
    assert d["prompts"][:3] == ["an oil painting of a snowy mountain village", "a man wearing a hat", "a rocket ship"]
    assert [f.name for f in rec.files] == ["samples_2_steps.png", "samples_3_steps.png", "samples.pt"]
    # the seed is reset for every setting: a run of the first setting alone gives the same images, bit for bit
    again = check_samples(run("a0_sampling", "--steps", "2", out=tmp_path / "second").out, 3, 40)
    for key in ("images", "stage1"):
        torch.testing.assert_close(d[key][:3], again[key], rtol=0, atol=0)


def test_cfg(run):
    out = run("a1_6_cfg", "--prompt", "a high quality photo").out
    assert (out / "samples.png").is_file()
    assert check_samples(out, 1, 40)["prompts"] == ["a high quality photo"]   # upsampled by stage II


def test_sdedit(run):
    out = run("a1_7_image_to_image", "--image", str(DATA / "rocket.png")).out
    assert (out / "edits.png").is_file()
    check_samples(out, 6, 20)                                           # stage I size: no upsampling


def test_inpainting(run):
    out = run("a1_7_2_inpainting", "--image", str(DATA / "chelsea.png")).out
    assert (out / "inpainting.png").is_file()
    check_samples(out, 1, 20)


def test_visual_anagrams(run):
    out = run("a1_8_visual_anagrams", "--prompt", "an oil painting of an old man",
              "an oil painting of people around a campfire").out
    assert (out / "anagrams.png").is_file() and (out / "anagrams_stage1.png").is_file()   # 40 px and stage I's 20
    d = check_samples(out, 1, 40)
    assert d["prompts"][0] == "an oil painting of an old man|an oil painting of people around a campfire"


@pytest.mark.parametrize("view", ["negate", "patches"])
def test_anagram_figure_shows_the_view_of_the_upsampled_image(run, view, monkeypatch):
    """The figure's second row is the view applied in the model's range [-1, 1] at stage II's size: negate is the
    colour inversion 1 - u of the shown image u, the jigsaw keeps its 4 x 4 grid at 40 px (10 px patches)."""
    from minidiff import guidance, viz
    tables = []
    monkeypatch.setattr(viz, "save_table", lambda rows, path, **kw: tables.append(rows) or path)
    run("a1_8_visual_anagrams", "--view", view, "--prompt", "a photo of a dog", "a rocket ship")
    shown, seen = torch.stack(tables[0][0]), torch.stack(tables[0][1])      # (1, 3, 40, 40) each, in [0, 1]
    expected = 1 - shown if view == "negate" else guidance.patch_permute(10).apply(shown)
    torch.testing.assert_close(seen, expected)
    first, first_seen = torch.stack(tables[1][0]), torch.stack(tables[1][1])   # stage I's figure: (1, 3, 20, 20)
    assert first.shape == (1, 3, 20, 20)
    torch.testing.assert_close(first_seen, 1 - first if view == "negate" else guidance.patch_permute(5).apply(first))


def test_hybrid_images(run, monkeypatch):
    from minidiff import guidance, viz
    tables = []
    monkeypatch.setattr(viz, "save_table", lambda rows, path, **kw: tables.append(rows) or path)
    out = run("a1_10_hybrid_images", "--prompt", "a lithograph of a skull", "a lithograph of waterfalls").out
    check_samples(out, 1, 40)
    near, far = torch.stack(tables[0][0]), torch.stack(tables[0][1])        # (1, 3, 40, 40) each
    # "seen from afar" is the sampling's low-pass (kernel 33, sigma 2 at stage I's 20 px) at stage II's 40 px
    torch.testing.assert_close(far, guidance.gaussian_blur(near, 65, 4.0))
    near, far = torch.stack(tables[1][0]), torch.stack(tables[1][1])        # stage I's figure: (1, 3, 20, 20)
    assert near.shape == (1, 3, 20, 20)
    torch.testing.assert_close(far, guidance.gaussian_blur(near, 33, 2.0))


def test_help_names_the_deepfloyd_options(capsys):
    with pytest.raises(SystemExit) as done:
        importlib.import_module("a0_sampling").main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--stage2", "--steps", "--seed", "DeepFloyd/IF-I-XL-v1.0", "num_inference_steps"):
        assert option in text


# --- one-line errors: through common.run in this process (cheap), and once as a real command line ------------


def one_line_error(stage: str, *args: str) -> str:
    """common.run(main) with args: it must exit with a one-line "error: ..." message (what users see)."""
    import common
    module = importlib.import_module(stage)
    with pytest.raises(SystemExit) as done:
        common.run(lambda: module.main(["--device", "cpu", *args]))
    message = str(done.value.code)
    assert message.startswith("error:") and "\n" not in message, message
    return message


def test_missing_image_is_one_line_on_the_command_line(env, tmp_path):
    one, two, cache = env
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "a1_7_image_to_image.py"), "--device", "cpu", "--backbone", "deepfloyd",
         "--model", str(one), "--stage2", str(two), "--out", str(tmp_path), "--image", str(tmp_path / "nowhere.png")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", P.CACHE_ENV: str(cache)})
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert last.startswith("error: image not found"), result.stderr


def test_not_an_image_is_one_line(run, env, tmp_path):
    one, two, _ = env
    notes = tmp_path / "notes.png"
    notes.write_text("these are notes, not pixels")
    assert "cannot read" in one_line_error("a1_7_image_to_image", "--backbone", "deepfloyd", "--model", str(one),
                                           "--stage2", str(two), "--out", str(tmp_path), "--image", str(notes))


def test_part0_with_mnist_is_one_line():
    assert "--backbone deepfloyd" in one_line_error("a0_sampling", "--backbone", "mnist")


def test_offline_with_nothing_cached_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert "not in the cache" in one_line_error("a1_6_cfg", "--backbone", "deepfloyd", "--out", str(tmp_path))


def test_uncached_prompt_without_t5_is_one_line(env, tmp_path, monkeypatch):
    one, two, _ = env
    bare = tmp_path / "IF-I-unet-only"                  # stage I without text_encoder/ and tokenizer/
    (bare / "unet").mkdir(parents=True)
    for f in (one / "unet").iterdir():
        (bare / "unet" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv(P.CACHE_ENV, str(tmp_path / "empty.safetensors"))
    message = one_line_error("a1_6_cfg", "--backbone", "deepfloyd", "--model", str(bare), "--stage2", str(two),
                             "--out", str(tmp_path))
    assert "not in the prompt cache" in message and "python -m minidiff.prompts" in message


def test_part0_equals_the_diffusers_pipelines_for_one_generator(run, env, tmp_path):
    """Part 0 as the course notebook drives diffusers: ONE torch.Generator seeded once, passed to IFPipeline (stage I,
    CFG 7) and then to IFSuperResolutionPipeline (stage II, CFG 4, noise level 250), with the same embeddings. The
    stage's 64 px (here 20 px) and 256 px (40 px) images equal the pipelines' for the same seed: the draws come in the
    pipelines' order (stage II's initial noise before its conditioning image's noise), and stage II gets stage I's
    output unclamped, as the pipeline does."""
    diffusers = pytest.importorskip("diffusers")
    one, two, cache = env
    prompts = ["a rocket ship", "a man wearing a hat"]
    samples = torch.load(run("a0_sampling", "--steps", "5", "--seed", "3", "--prompt", *prompts).out / "samples.pt")

    embeds = P.read_cache(cache)
    cond = torch.stack([embeds[P.cache_key(p, str(one))] for p in prompts])                # (2, 77, 32)
    uncond = embeds[P.cache_key("", str(one))].expand_as(cond)
    def unet(folder):
        return diffusers.UNet2DConditionModel.from_pretrained(folder, subfolder="unet", variant="fp16",
                                                              torch_dtype=torch.float32)
    def scheduler(folder, sub="scheduler"):
        return diffusers.DDPMScheduler.from_pretrained(folder, subfolder=sub)
    none = dict(tokenizer=None, text_encoder=None, safety_checker=None, feature_extractor=None, watermarker=None,
                requires_safety_checker=False)
    stage1 = diffusers.IFPipeline(unet=unet(one), scheduler=scheduler(one), **none)
    stage2 = diffusers.IFSuperResolutionPipeline(unet=unet(two), scheduler=scheduler(two),
                                                 image_noising_scheduler=scheduler(two, "image_noising_scheduler"),
                                                 **none)
    for pipe in (stage1, stage2):
        pipe.set_progress_bar_config(disable=True)
    def pipelines(cond, uncond):
        generator = torch.Generator("cpu").manual_seed(3)
        x = stage1(prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=5, guidance_scale=7.0,
                   generator=generator, output_type="pt").images                          # (2, 3, 20, 20)
        y = stage2(image=x, prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=5,
                   guidance_scale=4.0, noise_level=250, generator=generator, output_type="pt").images   # (2, 3, 40, 40)
        return ((x + 1) / 2).clamp(0, 1), ((y + 1) / 2).clamp(0, 1)                      # samples.pt's range
    x, y = pipelines(cond, uncond)
    # The comparison's own rounding noise: the pipelines again with the embeddings moved by one float32 ulp. Random
    # tiny UNets amplify a difference at every step (stage II alone, ours vs diffusers: 3e-7 after one step, 9e-4 max
    # after five), so two correct fp32 implementations differ by about this much. Measured mean |ours - diffusers|:
    # 2.6e-5 (stage I) and 1.6e-3 (stage II), 2.1 and 2.2 times the ulp runs' 1.3e-5 and 7.1e-4.
    ulp = torch.where(torch.rand(cond.shape, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0) * 2**-23
    x_noise, y_noise = pipelines(cond * (1 + ulp), uncond)
    for ours, theirs, noise in ((samples["stage1"], x, x_noise), (samples["images"], y, y_noise)):
        rounding = (noise - theirs).abs().mean()
        assert (ours - theirs).abs().mean() < 10 * rounding + 1e-6, ((ours - theirs).abs().mean(), rounding)
        assert (ours - theirs.flip(0)).abs().mean() > 20 * (ours - theirs).abs().mean()    # measured: 0.35 vs 2.6e-5,
                                                                                          # 0.44 vs 1.6e-3


@pytest.mark.parametrize("stage", ["a1_5_sampling", "a1_6_cfg"])
def test_sampling_figures_show_stage_i_above_stage_ii(run, stage, monkeypatch):
    """§1.5 and §1.6 show the 64 px (here 20 px) stage-I samples above their 256 px (40 px) upsamples, and
    samples.pt keeps both: stage II's own guidance would hide the §1.5 vs §1.6 contrast."""
    from minidiff import viz
    tables = []
    monkeypatch.setattr(viz, "save_table", lambda rows, path, **kw: tables.append((rows, kw)) or path)
    out = run(stage, *(["--prompt", "a pencil"] if stage == "a1_5_sampling" else ["--prompt", "a pencil", "a dog"])).out
    (first, final), kw = tables[0]
    assert first[0].shape == (3, 20, 20) and final[0].shape == (3, 40, 40)
    assert kw["row_titles"] == ["stage I, 20 px", "stage II, 40 px"]
    d = torch.load(out / "samples.pt")
    torch.testing.assert_close(d["stage1"], torch.stack(first))
