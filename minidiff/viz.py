"""Figures: titled image tables, loss curves, denoising GIFs.

Every function takes images as float tensors in [0, 1], shape (C, H, W) or (N, C, H, W), on any device, and
writes one file, returning its path. matplotlib runs headless (Agg).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) or (H, W) uint8."""
    a = (image.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return a[:, :, 0] if a.shape[2] == 1 else a


def save_table(
    rows: Sequence[Sequence[torch.Tensor]],
    path: Path | str,
    col_titles: Optional[Sequence[str]] = None,
    row_titles: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    cell_inches: float = 1.6,
) -> Path:
    """A table of images: rows[r][c] is a (C, H, W) image in [0, 1]; titles above columns, beside rows."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_inches * n_cols + (0.8 if row_titles else 0),
                                                      cell_inches * n_rows + (0.4 if title else 0)),
                             squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(rows[r]):
                ax.imshow(to_uint8(rows[r][c]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=8)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def save_grid(images: torch.Tensor, path: Path | str, nrow: int = 8, title: Optional[str] = None) -> Path:
    """A plain grid of (N, C, H, W) images in [0, 1], nrow per row, with an optional title."""
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    h, w = grid.shape[1:]
    fig, ax = plt.subplots(figsize=(max(2.0, w / 40), max(2.0, h / 40) + (0.3 if title else 0)))
    ax.imshow(to_uint8(grid), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_losses(losses: Sequence[float], path: Path | str, title: str, smooth: int = 50) -> Path:
    """Training loss per step on a log scale (report 5B Figures 4 and 11), raw and moving average."""
    losses = np.asarray(losses, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.4, label="per step")
    if len(losses) >= smooth:
        avg = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(smooth, len(losses) + 1), avg, lw=1.5, label=f"mean of {smooth}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("MSE loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def save_gif(frames: Sequence[torch.Tensor], path: Path | str, nrow: int = 10, seconds: float = 4.0,
             scale: int = 2) -> Path:
    """An animated GIF of the denoising process: each frame is (N, C, H, W) in [0, 1], tiled nrow per row;
    the last frame is held for a second."""
    pictures = []
    for frame in frames:
        grid = make_grid(frame.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
        img = Image.fromarray(to_uint8(grid))
        pictures.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST))
    duration = max(20, int(1000 * seconds / len(pictures)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:] + [pictures[-1]] * max(1, 1000 // duration),
                     duration=duration, loop=0)
    return path


def _save(fig, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
