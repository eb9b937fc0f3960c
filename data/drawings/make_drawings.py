"""Make data/drawings/*.png: digit sketches drawn with PIL (run from the repo root: python data/drawings/make_drawings.py)."""
from PIL import Image, ImageDraw
S, W = 112, 9   # canvas side, stroke width (MNIST's ~2 px strokes at 28 px, drawn at 4x)
def canvas():
    img = Image.new("L", (S, S), 0)
    return img, ImageDraw.Draw(img)
img, d = canvas()           # a "2": an arc, a diagonal, a base line
d.arc((30, 18, 82, 66), start=180, end=30, fill=255, width=W)
d.line((78, 54, 32, 92), fill=255, width=W)
d.line((30, 92, 84, 92), fill=255, width=W)
img.save("data/drawings/sketch_2.png")
img, d = canvas()           # a "4": two strokes of an open angle and a long vertical
d.line((62, 18, 30, 70), fill=255, width=W)
d.line((30, 70, 84, 70), fill=255, width=W)
d.line((68, 38, 68, 96), fill=255, width=W)
img.save("data/drawings/sketch_4.png")
img, d = canvas()           # a wobbly "9": a loop and a slanted stem
d.ellipse((36, 16, 78, 54), outline=255, width=W)
d.line((76, 40, 62, 98), fill=255, width=W)
img.save("data/drawings/sketch_9.png")
