"""Published weights into our own modules: the ONLY module that downloads or reads weight files.

A `source` is a Hugging Face Hub repo id ("DeepFloyd/IF-I-XL-v1.0") or a local folder laid out like one:

    unet/config.json   unet/diffusion_pytorch_model.fp16.safetensors   (or .safetensors, full precision)
    text_encoder/config.json   text_encoder/model.safetensors.index.fp16.json + model.fp16-0000{1,2}-of-00002.safetensors
    tokenizer/spiece.model

The Hub goes through `huggingface_hub` (token from `hf auth login` / HF_TOKEN, the standard cache,
`revision` pinning, HF_HUB_OFFLINE=1 for cache-only use); weights through `safetensors`, memory-mapped.
Pickled `.bin` checkpoints are never loaded (unpickling can run code).

One code path loads every model: build it on the meta device (no memory, no init), check the checkpoint's
keys and shapes against it, then read the tensors one by one, cast each to the requested dtype and device,
and `load_state_dict(strict=True, assign=True)`. Peak memory stays near one copy of the weights.
Every failure is a one-line LoadError (or ValueError for a bad argument or config) that says what to do.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from huggingface_hub import constants, get_token, hf_hub_download, try_to_load_from_cache
from huggingface_hub.utils import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError,
                                   LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
from safetensors import SafetensorError, safe_open
from torch import nn

from minidiff.t5 import T5Config, T5Encoder, T5Tokenizer
from minidiff.unet_if import IFUNet, IFUNetConfig

IF_LICENSE_CARD = "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0"
SHOW = 5  # how many offending keys an error message lists
READ_CHUNK_BYTES = 256 * 2**20  # see _read_tensors


class LoadError(OSError):
    """Weights or configs could not be found or read; the message is one line and ends with the fix."""


# ----------------------------------------------------------------------------------------------------------
# Where files come from: a local folder or the Hub (with its cache)


def _offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or flag.upper() in {"1", "ON", "YES", "TRUE"}


class _Source:
    """Finds files of one model repo, local or on the Hub; a missing file is None, anything else raises."""

    def __init__(self, source: str | os.PathLike, revision: str | None = None):
        self.name, self.revision = str(source), revision
        path = Path(source).expanduser()
        self.folder = path if path.is_dir() else None
        looks_like_path = self.name.startswith(("/", ".", "~")) or self.name.count("/") > 1
        if self.folder is None and looks_like_path:
            raise LoadError(f"no such folder {self.name!r}: pass an existing local folder laid out like the Hub "
                            "repo, or a Hub repo id such as 'DeepFloyd/IF-I-XL-v1.0'")
        self.not_cached = False  # set when the Hub was unreachable (or offline) and a file was not cached

    def find(self, subfolder: str, filename: str) -> Path | None:
        if self.folder is not None:
            path = self.folder / subfolder / filename
            return path if path.is_file() else None
        repo, rev = self.name, self.revision or "main"
        try:
            return Path(hf_hub_download(repo, filename, subfolder=subfolder or None, revision=self.revision,
                                        local_files_only=_offline()))
        except GatedRepoError:
            who = ("your token has no access yet: accept the license" if get_token()
                   else "no Hugging Face token was found: accept the license")
            raise LoadError(f"{repo} is gated and {who} on its model card https://huggingface.co/{repo} "
                            f"(for DeepFloyd IF: {IF_LICENSE_CARD}), then log in with `hf auth login` "
                            "(`huggingface-cli login` on older versions) or set HF_TOKEN") from None
        except RevisionNotFoundError:
            raise LoadError(f"revision {rev!r} not found in {repo}: pass an existing branch, tag or "
                            "commit hash as revision") from None
        except RepositoryNotFoundError:
            raise LoadError(f"repo {repo!r} not found on the Hugging Face Hub (or it is private and you are not "
                            "logged in): check the id, log in with `hf auth login` or HF_TOKEN, "
                            "or pass a local folder") from None
        except LocalEntryNotFoundError:  # offline, or no network, and not in the cache
            self.not_cached = True
            return None
        except EntryNotFoundError:      # the repo exists but has no such file
            return None
        except HfHubHTTPError as e:     # anything else the Hub answered (server error, rate limit, ...)
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LoadError(f"the Hub failed on {repo}/{subfolder}/{filename} ({first_line}): retry later, or run "
                            "with HF_HUB_OFFLINE=1 if it is already in the cache") from None

    def require(self, subfolder: str, candidates: list[str]) -> Path:
        """The first candidate that exists, or a LoadError naming them all and the fix."""
        for filename in candidates:
            path = self.find(subfolder, filename)
            if path is not None:
                return path
        where = f"{self.name}/{subfolder}" if subfolder else self.name
        names = ", ".join(candidates)
        if self.folder is not None:
            pickles = sorted(p.name for p in (self.folder / subfolder).glob("*.bin"))
            if pickles and any(c.endswith(".safetensors") or c.endswith(".json") for c in candidates):
                raise LoadError(f"{where} has only pickled weights ({pickles[0]}): minidiff never loads .bin "
                                "files; download the .safetensors files of the repo instead")
            raise LoadError(f"{where} has none of {names}: point source at a folder laid out like the Hub repo")
        if self.not_cached:
            raise LoadError(f"cannot get {names} of {where} (revision {self.revision or 'main'}): offline "
                            f"(HF_HUB_OFFLINE=1) or no network, and not in the cache {constants.HF_HUB_CACHE}: "
                            "run once with network access to download it, or pass a local folder")
        raise LoadError(f"{where} (revision {self.revision or 'main'}) has none of {names}: check the repo id, "
                        "subfolder and variant")

    def config(self, subfolder: str, config_class):
        """`subfolder/config.json` read into `config_class` (IFUNetConfig, T5Config), every field's type checked."""
        path = self.require(subfolder, ["config.json"])
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LoadError(f"{path} is not valid JSON ({e}): delete it and download it again") from None
        if not isinstance(d, dict):
            raise LoadError(f"{path} holds a JSON {type(d).__name__}, not an object of options: delete it and "
                            "download it again")
        hints = typing.get_type_hints(config_class)
        def check(name, value, per_block_scalar):       # diffusers lets one value stand for a tuple of them
            hint = hints[name]
            scalar = per_block_scalar and typing.get_origin(hint) is tuple and _has_type(value, typing.get_args(hint)[0])
            if not (_has_type(value, hint) or scalar):
                raise LoadError(f"{path}: {name} = {value!r} is not of type {hint}: delete it and download it again")
        for key, value in d.items():                    # as read: before from_dict computes with them
            if key in hints:
                check(key, value, per_block_scalar=True)
        try:
            config = config_class.from_dict(d)
        except (TypeError, AttributeError) as e:       # e.g. len() of a number where a list belongs
            raise LoadError(f"{path} has a wrongly typed option ({e}): delete it and download it again") from None
        for field in dataclasses.fields(config):        # as built: a scalar must have become a tuple
            check(field.name, getattr(config, field.name), per_block_scalar=False)
        return config

    def weight_files(self, subfolder: str, stem: str, variant: str | None) -> list[Path]:
        """The safetensors files of one model: the variant's (sharded through an index, or single), else
        the full-precision ones. stem: "diffusion_pytorch_model" (UNet) or "model" (T5)."""
        candidates = [f"{stem}.safetensors.index.{variant}.json", f"{stem}.{variant}.safetensors"] if variant else []
        candidates += [f"{stem}.safetensors.index.json", f"{stem}.safetensors"]
        path = self.require(subfolder, candidates)
        if not path.name.endswith(".json"):
            return [path]
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError) as e:
            raise LoadError(f"{path} is not a safetensors index ({type(e).__name__}: {e}): "
                            "delete it and download it again") from None
        return [self.require(subfolder, [shard]) for shard in shards]


def is_available(source: str | os.PathLike, subfolder: str, candidates: list[str],
                 revision: str | None = None) -> bool:
    """Whether one of subfolder/candidates is here without downloading anything: in the local folder `source`, or
    in the Hugging Face cache for the repo id `source` (the same folder-or-repo-id rule as every loader here).
    Reads no weights and never touches the network: `--backbone auto` asks it before choosing."""
    try:
        files = _Source(source, revision)
    except LoadError:                       # a path-like source that is no folder
        return False
    if files.folder is not None:
        return any((files.folder / subfolder / name).is_file() for name in candidates)
    try:
        return any(isinstance(try_to_load_from_cache(files.name, f"{subfolder}/{name}", revision=revision,
                                                     cache_dir=constants.HF_HUB_CACHE), str) for name in candidates)
    except HFValidationError:               # not a valid repo id either
        return False


# ----------------------------------------------------------------------------------------------------------
# One loading path for every model


class Stored(NamedTuple):
    """Where a checkpoint tensor lives: its file, its key in that file, its shape."""
    path: Path
    key: str
    shape: tuple[int, ...]


def _list_tensors(paths: list[Path]) -> dict[str, Stored]:
    """model key -> Stored, read from the safetensors headers only (no tensor data)."""
    found = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    found[key] = Stored(path, key, tuple(f.get_slice(key).get_shape()))
        except (SafetensorError, OSError) as e:
            raise LoadError(f"{path} is truncated or corrupted ({e}): delete it and download it again") from None
    return found


def _check_keys(model: nn.Module, found: dict, where: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [f"{k} {found[k].shape} vs {expected[k]}" for k in expected
                 if k in found and found[k].shape != expected[k]]
    problems = [f"{len(keys)} {what} ({', '.join(keys[:SHOW])}{', ...' if len(keys) > SHOW else ''})"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("mis-shaped keys, file vs model", misshaped)) if keys]
    if problems:
        raise LoadError(f"{where} does not match its config: {'; '.join(problems)}: check that config.json "
                        "and the weights come from the same model and revision")


def _read_tensors(found: dict[str, Stored], dtype: torch.dtype, device, fp32: tuple[str, ...] = ()
                  ) -> dict[str, torch.Tensor]:
    """Read every tensor, cast to dtype and moved to device one at a time.

    safetensors maps the file: a tensor read at its stored dtype on the CPU stays a view of the mapping (no
    copy, pages read on first use). A cast or a move makes a copy, and the mapped pages it was read from stay
    resident while the file is open, so the file is reopened every READ_CHUNK_BYTES of copies: peak memory
    is then the result plus one chunk, not the result plus the whole file.
    """
    state = {}
    todo = {}
    for key, stored in found.items():
        todo.setdefault(stored.path, []).append((key, stored.key))
    for path, items in todo.items():
        try:
            while items:
                with safe_open(str(path), framework="pt", device="cpu") as f:
                    copied = 0
                    while items and copied < READ_CHUNK_BYTES:
                        key, stored_key = items.pop()
                        tensor = f.get_tensor(stored_key)
                        state[key] = tensor.to(device, torch.float32 if key.endswith(fp32) and fp32 else dtype)
                        copied += 0 if state[key] is tensor else tensor.nbytes
        except (SafetensorError, OSError) as e:
            raise LoadError(f"{path} is truncated or corrupted ({e}): delete it and download it again") from None
    return state


def _load(build: Callable[[], nn.Module], paths: list[Path], dtype: torch.dtype, device,
          rename: Callable[[dict[str, Stored]], dict[str, Stored]] = dict, fp32: tuple[str, ...] = ()) -> nn.Module:
    """Build on meta, check keys and shapes, read + cast tensor by tensor (keys ending with one of `fp32`: to
    float32), assign. Returns an eval() model."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype (torch.float32, torch.bfloat16, ...), got {dtype!r}")
    with torch.device("meta"):
        model = build()
    found = rename(_list_tensors(paths))
    _check_keys(model, found, where=str(paths[0].parent))
    model.load_state_dict(_read_tensors(found, dtype, device, fp32), strict=True, assign=True)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------
# The public loaders


def load_config(source: str | os.PathLike, config_class, subfolder: str, revision: str | None = None):
    """Only a model's config.json (IFUNetConfig or T5Config), type-checked: no weights are read."""
    return _Source(source, revision).config(subfolder, config_class)


def load_unet(source: str | os.PathLike, subfolder: str = "unet", variant: str | None = "fp16",
              dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
              revision: str | None = None) -> IFUNet:
    """An IF UNet (stage I or II) with published weights.

    Args:
        source: Hub repo id ("DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0") or a local folder.
        variant: "fp16" reads diffusion_pytorch_model.fp16.safetensors (half the download), falling back
            to the full-precision file when absent; None reads the full-precision file.
        dtype, device: of the returned model's weights; each tensor is cast as it is read.
        revision: a branch, tag or commit hash of the Hub repo (None: main).
    Returns:
        IFUNet in eval mode, no gradients.
    """
    files = _Source(source, revision)
    config = files.config(subfolder, IFUNetConfig)
    paths = files.weight_files(subfolder, "diffusion_pytorch_model", variant)
    return _load(lambda: IFUNet(config), paths, dtype, device)


def _has_type(value, hint) -> bool:
    """Whether a config value read from JSON fits its field's type: int, float (an int is fine), str, bool, None,
    X | Y and tuple[X, ...]. bool is not an int here, although Python says it is."""
    if isinstance(hint, types.UnionType):
        return any(_has_type(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (list, tuple)) and all(_has_type(v, typing.get_args(hint)[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _tied_t5_embeddings(found: dict[str, Stored]) -> dict[str, Stored]:
    """transformers' T5 checkpoints may hold encoder.embed_tokens.weight, tied to shared.weight:
    drop it when shared.weight is there, else read it as shared.weight."""
    found = dict(found)
    if "encoder.embed_tokens.weight" in found:
        found.setdefault("shared.weight", found.pop("encoder.embed_tokens.weight"))
    return found


def load_text_encoder(source: str | os.PathLike, subfolder: str = "text_encoder", variant: str | None = "fp16",
                      dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      revision: str | None = None):
    """IF's T5 v1.1 XXL encoder with published weights (sharded safetensors through the index json).

    The fp16 variant keeps the feed-forward `wo` weights in float32; every tensor is cast to `dtype`, except that
    dtype=torch.float16 (for GPUs without bf16, e.g. T4) keeps `wo` in float32: plain float16 overflows in T5 XXL's
    feed-forward, and with `wo` in float32 (transformers' rule for T5 v1.1) its output and the residual stream after
    it stay float32 (t5.T5DenseGatedGelu, t5.clamp_inf_fp16).
    Returns: minidiff.t5.T5Encoder in eval mode, no gradients.
    """
    files = _Source(source, revision)
    config = files.config(subfolder, T5Config)
    paths = files.weight_files(subfolder, "model", variant)
    return _load(lambda: T5Encoder(config), paths, dtype, device, rename=_tied_t5_embeddings,
                 fp32=("DenseReluDense.wo.weight",) if dtype == torch.float16 else ())


def load_tokenizer(source: str | os.PathLike, subfolder: str = "tokenizer", revision: str | None = None):
    """T5's sentencepiece tokenizer from `tokenizer/spiece.model`. Returns minidiff.t5.T5Tokenizer."""
    return T5Tokenizer(_Source(source, revision).require(subfolder, ["spiece.model"]))
