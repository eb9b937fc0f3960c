"""Prompt embeddings, computed once and cached on disk, so that T5 XXL (9.5 GB in bfloat16) is loaded only
when a prompt has never been seen.

    prompt --preprocess_prompt--> key text --T5Tokenizer--> (77,) ids + mask --T5Encoder--> (77, d_model)

`encode_prompts(prompts)` looks every prompt up in ONE cache file, encodes only the missing ones (loading
the tokenizer and encoder through minidiff.hub, then dropping them), writes them back, and returns the
embeddings of all prompts in order. A stage whose prompts are all cached never loads T5, so after
`python -m minidiff.prompts` (the report's prompts, REPORT_PROMPTS) Part A runs without the 9.5 GB encoder.
The unconditional embedding of classifier-free guidance is T5("") (DESIGN §5): "" is a prompt like any other
and is cached too.

The cache file (safetensors):
- location: `cache_path` argument, else $MINIDIFF_PROMPT_CACHE, else
  $XDG_CACHE_HOME/minidiff/prompt_embeds.safetensors (default ~/.cache/minidiff/prompt_embeds.safetensors);
- one tensor per (encoder, prompt): name = the JSON list [source, revision, preprocessed prompt]
  (e.g. '["DeepFloyd/IF-I-XL-v1.0", "main", "a photo of a dog"]'; a local folder source is stored as its
  absolute path), value = (77, d_model) float32 on the CPU;
- metadata {"format": "minidiff-prompt-embeds/2", "crc32": JSON {name: CRC-32 of the tensor's bytes}}: safetensors
  has no checksum of its own, and a flipped bit would otherwise change images silently.
Embeddings are stored in float32: T5 may run in bfloat16, float16 or float32 and float32 holds each exactly
(bf16 -> fp32 is lossless), the UNets consume float32 (or cast down themselves), and the cost is small
(1.26 MB per XXL prompt, 23 MB for the report's 18). The first computation of a key wins: delete the file
to recompute with another dtype. Writes are atomic (temporary file in the same folder + os.replace), so a
crash never leaves a half-written cache; concurrent writers may drop each other's new entries (rerun). Reading
verifies every entry (checksum, shape, finite values); damage is one line naming the file and the fix.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import zlib
from pathlib import Path

import torch

from minidiff.data import atomic_write
from minidiff.t5 import preprocess_prompt

DEFAULT_SOURCE = "DeepFloyd/IF-I-XL-v1.0"   # IF stage I's repo holds the text_encoder/ and tokenizer/ folders
# Every IF stage-I repo ships the same T5 v1.1 XXL (DESIGN §5): minidiff reads it, and keys the cache, from one of
# them, so that choosing IF-I-M or IF-I-L never downloads T5 again (11.5 GB) nor re-encodes a cached prompt.
IF_STAGE1_REPOS = ("DeepFloyd/IF-I-M-v1.0", "DeepFloyd/IF-I-L-v1.0", "DeepFloyd/IF-I-XL-v1.0")
CACHE_ENV = "MINIDIFF_PROMPT_CACHE"
FORMAT = "minidiff-prompt-embeds/2"      # 2: with a CRC-32 per entry
MAX_LENGTH = 77                            # tokens per prompt (t5.T5Tokenizer)

# Every prompt of the report (5A: sampling, §1.3-1.10; "a man wearing a hat" appears twice), deduplicated,
# plus "", the unconditional prompt for CFG. Spellings as in the report ("amalfi cost").
REPORT_PROMPTS = tuple(dict.fromkeys([
    "an oil painting of a snowy mountain village", "a man wearing a hat", "a rocket ship",
    "a high quality photo", "a lithograph of a waterfall", "a lithograph of a skull",
    "an oil painting of people around a campfire", "an oil painting of an old man",
    "a photo of the amalfi cost", "a photo of a dog", "a photo of a hipster barista", "a man wearing a hat",
    "a pencil", "a photo of a man", "a lithograph of waterfalls", "a lithograph of a rocket ship",
    "a photo of a rocket ship", "a photograph of a snowy mountain village", "",
]))


class PromptCacheError(ValueError):
    """The prompt cache is unreadable, or a prompt is missing from it and T5 cannot be loaded."""


def default_cache_path() -> Path:
    """$MINIDIFF_PROMPT_CACHE, else $XDG_CACHE_HOME/minidiff/prompt_embeds.safetensors (~/.cache by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache_home / "minidiff" / "prompt_embeds.safetensors"


def text_encoder_of(stage1_source: str, revision: str | None = None) -> tuple[str, str | None]:
    """(source, revision) of the T5 that encodes prompts for a stage I: the shared one (DEFAULT_SOURCE, main) for
    any IF stage-I repo on the Hub; a local folder or another repo brings its own text_encoder/."""
    if str(stage1_source) in IF_STAGE1_REPOS:
        return DEFAULT_SOURCE, None
    return str(stage1_source), revision


def cache_key(prompt: str, source: str = DEFAULT_SOURCE, revision: str | None = None) -> str:
    """The cache entry's name: JSON [source, revision, preprocessed prompt]. `revision` None means "main";
    a local folder source is keyed by its absolute path."""
    if Path(source).is_dir():
        source = str(Path(source).resolve())
    return json.dumps([source, revision or "main", preprocess_prompt(prompt)], ensure_ascii=False)


def _corrupted(path: Path, reason: str) -> PromptCacheError:
    reason = reason.strip().splitlines()[0] if reason.strip() else "unreadable"
    return PromptCacheError(f"prompt cache {path} is corrupted ({reason}); delete it and rerun "
                            "(missing embeddings are recomputed, or precompute them with `python -m minidiff.prompts`)")


def _crc32(embed: torch.Tensor) -> str:
    return f"{zlib.crc32(embed.contiguous().numpy().tobytes()):08x}"


def read_cache(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All entries of the cache file {key: (77, d_model) float32}; {} when the file does not exist.
    Every entry is verified before use: its CRC-32 (a flipped bit), that it is finite, and its shape (77, d_model),
    one d_model for all. Raises PromptCacheError (one line, naming the file and the fix) when the file is not a valid
    cache."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise PromptCacheError(f"prompt cache {path} is a folder; give a file path (--cache or ${CACHE_ENV})")
    if not path.exists():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            entries = {key: f.get_tensor(key) for key in f.keys()}
        checksums = json.loads(metadata.get("crc32", "{}"))
    except Exception as e:  # safetensors reports truncation and garbage with its own error types
        raise _corrupted(path, f"{type(e).__name__}: {e}") from e
    if metadata.get("format") != FORMAT:
        raise _corrupted(path, f"format {metadata.get('format')!r}, expected {FORMAT!r}")
    widths = {embed.shape[-1] for embed in entries.values()}
    for key, embed in entries.items():
        try:
            ok = isinstance(json.loads(key), list)
        except json.JSONDecodeError:
            ok = False
        if not ok or embed.dtype != torch.float32 or embed.dim() != 2 or embed.shape[0] != MAX_LENGTH:
            raise _corrupted(path, f"bad entry {key[:60]!r}: {embed.dtype} {tuple(embed.shape)}, expected float32 "
                                   f"({MAX_LENGTH}, d_model)")
        if len(widths) > 1:
            raise _corrupted(path, f"entries of several widths {sorted(widths)}")
        if checksums.get(key) != _crc32(embed):
            raise _corrupted(path, f"checksum mismatch in {key[:60]!r}")
        if not torch.isfinite(embed).all():
            raise _corrupted(path, f"non-finite values in {key[:60]!r}")
    return entries


def write_cache(path: str | os.PathLike, entries: dict[str, torch.Tensor]) -> None:
    """Write all entries, each with its CRC-32, atomically (data.atomic_write: a temporary file in the same folder,
    then os.replace over `path`; a failed write is one OSError line and keeps the old file)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = {k: v.contiguous() for k, v in entries.items()}
    metadata = {"format": FORMAT, "crc32": json.dumps({k: _crc32(v) for k, v in entries.items()})}
    atomic_write(path, lambda tmp: save_file(entries, str(tmp), metadata=metadata))


def missing_prompts(prompts: list[str], source: str = DEFAULT_SOURCE, revision: str | None = None,
                    cache_path: str | os.PathLike | None = None) -> list[str]:
    """The preprocessed prompts (deduplicated, in order) that encode_prompts would have to run T5 for."""
    cached = read_cache(cache_path or default_cache_path())
    todo = dict.fromkeys(preprocess_prompt(p) for p in prompts)
    return [p for p in todo if cache_key(p, source, revision) not in cached]


def _load_t5(source, revision, dtype, device, n_missing, example, path):
    from minidiff import hub

    try:
        tokenizer = hub.load_tokenizer(source, subfolder="tokenizer", revision=revision)
        encoder = hub.load_text_encoder(source, subfolder="text_encoder", dtype=dtype, device=device,
                                        revision=revision)
    except Exception as e:
        reason = (str(e).strip().splitlines() or [""])[0]
        raise PromptCacheError(
            f"{n_missing} prompt(s) (e.g. {example!r}) are not in the prompt cache {path} and T5 could not be "
            f"loaded from {source!r} ({type(e).__name__}: {reason}); fix: accept the license on the model card "
            f"and log in (`huggingface-cli login`), or precompute them where the weights are available with "
            f"`python -m minidiff.prompts \"<prompt>\" ...` and copy the cache file here") from e
    return tokenizer, encoder


def encode_prompts(prompts: list[str], source: str = DEFAULT_SOURCE, *, revision: str | None = None,
                   cache_path: str | os.PathLike | None = None, dtype: torch.dtype = torch.bfloat16,
                   device: str | torch.device = "cpu", batch_size: int = 4, progress: bool = False) -> torch.Tensor:
    """T5 embeddings of `prompts`, from the cache where possible (see the module docstring).

    Args:
        prompts: N strings; each is preprocessed (lowercase, strip) before lookup and encoding.
        source: Hub repo id or local folder with `text_encoder/` and `tokenizer/` (the cache key's first part).
        revision: Hub revision (None = "main"); part of the cache key.
        cache_path: the cache file; default default_cache_path().
        dtype, device: where T5 runs if some prompt is missing: bfloat16, float32, or float16 on GPUs without
            bf16 (then the feed-forward `wo` runs in float32: hub.load_text_encoder).
        batch_size: prompts per T5 forward; the cache is written after every batch.
        progress: show a tqdm progress bar over the prompts being encoded.
    Returns:
        (N, 77, d_model) float32 on the CPU, in the order of `prompts` (move it where the UNet runs).
    Raises:
        PromptCacheError: corrupted cache file, or missing prompts and T5 cannot be loaded.
    """
    if isinstance(prompts, str):
        raise TypeError("encode_prompts expects a list of prompts, got a single string")
    path = Path(cache_path) if cache_path is not None else default_cache_path()
    keys = [cache_key(p, source, revision) for p in prompts]
    cache = read_cache(path)
    todo = [p for p in dict.fromkeys(preprocess_prompt(p) for p in prompts)
            if cache_key(p, source, revision) not in cache]
    if todo:
        tokenizer, encoder = _load_t5(source, revision, dtype, device, len(todo), todo[0], path)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(todo), desc="T5 prompts", unit="prompt")
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            input_ids, attention_mask = tokenizer(batch)                    # (b, 77) each
            with torch.inference_mode():
                embeds = encoder(input_ids.to(device), attention_mask.to(device))  # (b, 77, d_model)
            embeds = embeds.float().cpu()
            for prompt, embed in zip(batch, embeds):
                cache[cache_key(prompt, source, revision)] = embed.clone()  # own storage: safetensors refuses views
            write_cache(path, cache)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        del tokenizer, encoder  # free the 9.5 GB now, not at the caller's next garbage collection
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return torch.stack([cache[k] for k in keys])                             # (N, 77, d_model)


def import_embeddings(files: list[str | os.PathLike], prompt: str | None = None, source: str = DEFAULT_SOURCE,
                      cache_path: str | os.PathLike | None = None) -> tuple[int, int]:
    """Put the course's precomputed T5 embeddings into the cache, so that their prompts never need T5 here.

    Formats (read with weights_only=True: tensors and plain containers only, never code):
      fall 2024 `prompt_embeds_dict.pth`: {prompt: (1, 77, 4096) float16}, "" included for CFG;
      fall 2025, one `.pth` per prompt (the course's embedding Spaces): such a dict with one prompt, or a bare
      (1, 77, 4096) / (77, 4096) tensor, whose prompt `prompt` names (then one file only).
    Each embedding is checked (77 tokens, d_model as the cache's others, float16/bfloat16/float32, finite) and stored
    as float32 under cache_key(prompt, source): the course made them with IF-I-XL's T5, the one every IF repo shares.
    A prompt already cached keeps its entry (the first computation of a key wins, as for encode_prompts).
    Returns: (entries added, entries already cached). Raises PromptCacheError (one line, naming the file)."""
    found: dict[str, torch.Tensor] = {}
    if prompt is not None and len(files) != 1:
        raise PromptCacheError(f"--prompt names the prompt of ONE bare-tensor file, got {len(files)} files")
    for file in map(Path, files):
        try:
            obj = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # missing, not a torch file, or pickled code that weights_only refuses
            raise PromptCacheError(f"cannot read {file} as course embeddings ({type(e).__name__}: "
                                   f"{(str(e).strip().splitlines() or [''])[0][:120]})") from None
        if isinstance(obj, torch.Tensor):
            if prompt is None:
                raise PromptCacheError(f"{file} holds one embedding without its prompt: say which with --prompt TEXT")
            obj = {prompt: obj}
        if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
            raise PromptCacheError(f"{file} is not course embeddings: expected {{prompt: (1, 77, d_model) tensor}}, "
                                   f"got {type(obj).__name__}")
        for text, embed in obj.items():
            ok = (isinstance(embed, torch.Tensor) and embed.dtype in (torch.float16, torch.bfloat16, torch.float32)
                  and embed.shape[-2:-1] == (MAX_LENGTH,) and embed.dim() in (2, 3) and embed.shape[:-2] in ((), (1,)))
            if not ok:
                what = f"{embed.dtype} {tuple(embed.shape)}" if isinstance(embed, torch.Tensor) else type(embed).__name__
                raise PromptCacheError(f"{file}: the embedding of {text!r} is {what}, expected (1, {MAX_LENGTH}, "
                                       "d_model) float16, bfloat16 or float32")
            if not torch.isfinite(embed).all():
                raise PromptCacheError(f"{file}: the embedding of {text!r} has non-finite values; get the file again")
            found[cache_key(text, source)] = embed.reshape(MAX_LENGTH, -1).float().clone()   # (77, d_model)
    path = Path(cache_path) if cache_path is not None else default_cache_path()
    cache = read_cache(path)
    widths = {e.shape[-1] for e in [*cache.values(), *found.values()]}
    if len(widths) > 1:
        raise PromptCacheError(f"the embeddings are {sorted(widths)} wide, mixed with the cache {path}: they come "
                               "from different text encoders (IF's T5 XXL gives 4096)")
    new = {k: v for k, v in found.items() if k not in cache}
    if new:
        write_cache(path, {**cache, **new})
    return len(new), len(found) - len(new)


def _positive(text: str) -> int:
    if not (text.strip().isascii() and text.strip().isdecimal()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1, got {text!r}")
    return int(text)


def _import_main(argv: list[str]) -> None:
    """`python -m minidiff.prompts import FILE ... [--prompt TEXT]`: the course's .pth embeddings into the cache."""
    parser = argparse.ArgumentParser(prog="python -m minidiff.prompts import", description=import_embeddings.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="prompt_embeds_dict.pth (fall 2024) or per-prompt .pth files")
    parser.add_argument("--prompt", help="the prompt of a file that holds a bare tensor")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="the T5 they were made with (default: %(default)s)")
    parser.add_argument("--cache", default=None, help=f"cache file (default: ${CACHE_ENV} or {default_cache_path()})")
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")  # one line
    args = parser.parse_args(argv)
    path = Path(args.cache) if args.cache else default_cache_path()
    try:
        added, kept = import_embeddings(args.files, args.prompt, args.source, path)
    except (PromptCacheError, OSError) as e:
        raise SystemExit(f"error: {e}") from e
    print(f"imported {added} embedding(s) into {path}" + (f"; {kept} were cached already (kept)" if kept else ""))


def main(argv: list[str] | None = None) -> None:
    """`python -m minidiff.prompts ["prompt" ...]`: precompute and cache embeddings (default: REPORT_PROMPTS).
    `python -m minidiff.prompts import FILE ...`: import the course's precomputed ones instead (no T5 needed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["import"]:
        return _import_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m minidiff.prompts", description=main.__doc__)
    parser.add_argument("prompts", nargs="*", help="prompts to encode (default: every prompt of the report, and '')")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="Hub repo id or local folder (default: %(default)s)")
    parser.add_argument("--revision", default=None, help="Hub revision (default: main)")
    parser.add_argument("--cache", default=None, help=f"cache file (default: ${CACHE_ENV} or {default_cache_path()})")
    parser.add_argument("--dtype", choices=["bfloat16", "float32", "float16"], default="bfloat16",
                        help="T5 compute dtype; float16 (with wo in float32) for GPUs without bf16, e.g. a T4")
    parser.add_argument("--device", default="auto", help="where T5 runs: cpu, cuda, ... (default: cuda if there is one)")
    parser.add_argument("--batch-size", type=_positive, default=4, help="prompts per T5 forward (default: 4)")
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")  # one line
    args = parser.parse_args(argv)
    prompts = list(dict.fromkeys(preprocess_prompt(p) for p in args.prompts or REPORT_PROMPTS))
    path = Path(args.cache) if args.cache else default_cache_path()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        if torch.empty(1, device=args.device).is_meta:       # checked before any download
            raise RuntimeError("it holds no data")
    except (RuntimeError, AssertionError) as e:
        raise SystemExit(f"error: device {args.device!r} is not usable here ({str(e).splitlines()[0]}); "
                         f"try --device cpu") from None
    try:
        todo = missing_prompts(prompts, args.source, args.revision, path)
        print(f"{len(prompts) - len(todo)} of {len(prompts)} prompts already cached in {path}")
        if not todo:
            return
        embeds = encode_prompts(prompts, args.source, revision=args.revision, cache_path=path,
                                dtype=getattr(torch, args.dtype), device=args.device,
                                batch_size=args.batch_size, progress=True)
    except (PromptCacheError, OSError) as e:
        raise SystemExit(f"error: {e}") from e  # one line, no traceback
    print(f"encoded {len(todo)} new prompt(s) with T5 ({args.dtype}, {args.device}), encoder freed; "
          f"embeddings {tuple(embeds.shape[1:])} float32 written to {path}")


if __name__ == "__main__":
    main()
