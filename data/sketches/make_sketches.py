"""Regenerate the quick line sketches of data/sketches/ (report 5A §1.7.1): `python data/sketches/make_sketches.py`.

Black strokes on white, 256x256, drawn with PIL's ImageDraw. Each point is jittered by a fixed-seed random walk
so the lines wobble like a quick hand sketch (the output is the same on every run).
"""
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

SIZE, WIDTH = 256, 4
HERE = Path(__file__).resolve().parent


def wobbly(draw: ImageDraw.ImageDraw, points, rng: random.Random, jitter: float = 1.0) -> None:
    """A polyline through `points`, each segment cut in short pieces that drift a little, like a hand."""
    out = []
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        n = max(2, int(math.hypot(x1 - x0, y1 - y0) / 12))
        for i in range(n):
            f = i / n
            out.append((x0 + f * (x1 - x0) + rng.gauss(0, jitter), y0 + f * (y1 - y0) + rng.gauss(0, jitter)))
    out.append(points[-1])
    draw.line(out, fill=0, width=WIDTH, joint="curve")


def house(draw, rng):
    wobbly(draw, [(60, 130), (60, 215), (196, 215), (196, 130)], rng)           # walls and floor
    wobbly(draw, [(45, 135), (128, 55), (211, 135)], rng)                        # roof
    wobbly(draw, [(112, 215), (112, 165), (144, 165), (144, 215)], rng)          # door
    wobbly(draw, [(75, 145), (100, 145), (100, 170), (75, 170), (75, 145)], rng)      # window
    wobbly(draw, [(156, 145), (181, 145), (181, 170), (156, 170), (156, 145)], rng)   # window
    wobbly(draw, [(160, 95), (160, 65), (178, 65), (178, 112)], rng)             # chimney
    wobbly(draw, [(20, 225), (236, 225)], rng, jitter=1.8)                       # ground


def spiral(draw, rng):
    pts = [(128 + 3.4 * a * math.cos(a), 128 + 3.4 * a * math.sin(a)) for a in [i * 0.15 for i in range(1, 220)]]
    wobbly(draw, pts, rng, jitter=0.8)


def tree(draw, rng):
    wobbly(draw, [(115, 225), (118, 150), (112, 140)], rng)                      # trunk
    wobbly(draw, [(141, 225), (138, 150), (144, 140)], rng)
    crown = [(128 + 70 * math.cos(a) * (1 + 0.12 * math.sin(5 * a)), 95 + 60 * math.sin(a) * (1 + 0.12 * math.sin(5 * a)))
             for a in [i * 2 * math.pi / 60 for i in range(61)]]
    wobbly(draw, crown, rng)                                                      # a cloud-like crown
    wobbly(draw, [(30, 228), (226, 228)], rng, jitter=1.8)                        # ground


if __name__ == "__main__":
    for seed, (name, fn) in enumerate([("house", house), ("spiral", spiral), ("tree", tree)]):
        img = Image.new("L", (SIZE, SIZE), 255)
        fn(ImageDraw.Draw(img), random.Random(seed))
        img.convert("RGB").save(HERE / f"{name}.png")
        print(f"wrote {HERE / f'{name}.png'}")
