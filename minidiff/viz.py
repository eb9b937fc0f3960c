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


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) or (H, W) uint8."""
    a = (image.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return a[:, :, 0] if a.shape[2] == 1 else a


def tile(images: torch.Tensor, nrow: int, padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) images in [0, 1] -> one (C, H', W') picture: rows of `nrow` images on a white background,
    `padding` pixels around each."""
    images = images.detach().float().cpu().clamp(0, 1)
    N, C, H, W = images.shape
    rows, cols = -(-N // nrow), min(N, nrow)                         # ceil(N / nrow) rows
    grid = torch.ones(C, rows * (H + padding) + padding, cols * (W + padding) + padding)
    for i, image in enumerate(images):
        top, left = padding + (i // nrow) * (H + padding), padding + (i % nrow) * (W + padding)
        grid[:, top:top + H, left:left + W] = image
    return grid


def save_table(
    rows: Sequence[Sequence[torch.Tensor]],
    path: Path | str,
    col_titles: Optional[Sequence[str]] = None,
    row_titles: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    cell_inches: float = 1.6,
) -> Path:
    """A table of images: rows[r][c] is a (C, H, W) image in [0, 1]; titles above columns, beside rows. Cells are
    cell_inches wide, and as tall as the tallest image's shape asks (a grid of 10 x 4 digits: 0.4 of that)."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    aspect = max(image.shape[-2] / image.shape[-1] for row in rows for image in row)           # height / width
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_inches * n_cols + (0.8 if row_titles else 0),
                                                      cell_inches * aspect * n_rows + (0.4 if title else 0)),
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
    grid = tile(images, nrow)
    h, w = grid.shape[1:]
    fig, ax = plt.subplots(figsize=(max(2.0, w / 40), max(2.0, h / 40) + (0.3 if title else 0)))
    ax.imshow(to_uint8(grid), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def moving_average(values: Sequence[float], window: int) -> tuple[np.ndarray, np.ndarray]:
    """(centres, means): the mean of each run of `window` consecutive values, placed at the run's centre in 1-based
    step numbers (steps k+1 .. k+window -> k + (window + 1) / 2), so that it runs through the curve it summarises
    instead of lagging behind it."""
    means = np.convolve(np.asarray(values, dtype=np.float64), np.ones(window) / window, mode="valid")
    return np.arange(len(means)) + (window + 1) / 2, means


def plot_losses(losses: Sequence[float], path: Path | str, title: str, smooth: int = 50) -> Path:
    """Training loss per step on a log scale (report 5B Figures 4 and 11), raw and a centred moving average."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.4, label="per step")
    if len(losses) >= smooth:
        ax.plot(*moving_average(losses, smooth), lw=1.5, label=f"mean of {smooth} steps")
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
        grid = tile(frame, nrow)
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


def write_report(sections: Sequence[dict], path: Path | str, title: str, intro: str = "") -> Path:
    """A self-contained HTML page (images inlined as base64) laid out like the report.

    Each section is a dict with: "title", "text" (the stage's docstring), "status" ("ok" or the reason it is
    missing, shown in red), "notes" (optional lines worth showing, e.g. the backbone or the sample metrics),
    "seconds", "files" (paths it wrote), "metrics" (optional dict), "command", and "part" (optional: a heading
    written above the first section of each part). A section may instead hold "variants": a list of such dicts
    (with a "label"), the same stage run on several backbones, shown side by side.
    """
    import base64
    import html
    import json

    mime = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg"}

    def body(s: dict) -> list[str]:
        out = [f"<p class='meta'>command: <code>{html.escape(s.get('command', ''))}</code>"
               + (f" &middot; {s['seconds']:.1f} s" if s.get("seconds") is not None else "") + "</p>"]
        if s.get("status", "ok") != "ok":
            out.append(f"<p class='missing'>{html.escape(s['status'])}</p>")
        out += [f"<p class='meta'>{html.escape(note)}</p>" for note in s.get("notes", [])]
        if s.get("metrics"):
            out.append(f"<pre>{html.escape(json.dumps(s['metrics'], indent=2))}</pre>")
        for f in map(Path, s.get("files", [])):
            if f.suffix in mime and f.exists():
                data = base64.b64encode(f.read_bytes()).decode()
                out.append(f"<figure><img src='data:{mime[f.suffix]};base64,{data}' alt='{html.escape(f.name)}'>"
                           f"<figcaption>{html.escape(f.name)}</figcaption></figure>")
            else:
                out.append(f"<p class='meta'>also wrote {html.escape(str(f))}</p>")
        return out

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "h2{border-top:1px solid #ccc;padding-top:1em}figure{margin:1em 0}img{max-width:100%}"
             "figcaption{font-size:.85em;color:#555}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}"
             ".missing{color:#a33}.meta{font-size:.85em;color:#555}nav a{margin-right:.8em}"
             ".variants{display:flex;gap:1em}.variants>div{flex:1;min-width:0}"
             "</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><nav>"]
    parts += [f"<a href='#s{i}'>{html.escape(s['title'].split(':')[0])}</a>" for i, s in enumerate(sections)]
    parts.append("</nav>")
    part = None
    for i, s in enumerate(sections):
        if s.get("part") and s["part"] != part:
            part = s["part"]
            parts.append(f"<h1 class='part'>{html.escape(part)}</h1>")
        parts.append(f"<h2 id='s{i}'>{html.escape(s['title'])}</h2>")
        parts.append(f"<pre>{html.escape(s.get('text', '').strip())}</pre>")
        if "variants" in s:
            parts.append("<div class='variants'>")
            for v in s["variants"]:
                parts += ["<div>", f"<h3>{html.escape(v['label'])}</h3>", *body(v), "</div>"]
            parts.append("</div>")
        else:
            parts += body(s)
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
