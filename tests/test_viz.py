"""Figures: the image grid every figure is made of, the loss curve's moving average, the HTML report."""
import numpy as np
import torch

from minidiff.viz import moving_average, tile


def test_tile_places_images_row_by_row_on_white_padding():
    images = torch.stack([torch.full((1, 3, 4), v) for v in (0.0, 0.25, 0.5)])    # (3, 1, 3, 4)
    grid = tile(images, nrow=2, padding=2)
    assert grid.shape == (1, 2 + 2 * (3 + 2), 2 + 2 * (4 + 2))                     # 2 rows of 2, padding around
    assert torch.equal(grid[:, 2:5, 2:6], images[0]) and torch.equal(grid[:, 2:5, 8:12], images[1])
    assert torch.equal(grid[:, 7:10, 2:6], images[2])                               # second row, first column
    assert (grid[:, 7:10, 8:12] == 1).all()                                         # the empty slot stays white
    assert grid.sum() == grid.numel() - images.numel() + images.sum()               # the rest is white padding


def test_tile_clamps_to_the_unit_range_and_keeps_channels():
    grid = tile(torch.tensor([-1.0, 2.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2), nrow=8, padding=0)
    assert grid.shape == (3, 1, 2) and grid.min() == 0 and grid.max() == 1


def test_report_shows_a_failure_in_red_and_notes_as_notes(tmp_path):
    from minidiff.viz import write_report
    page = write_report([{"title": "b2_5: ok", "status": "ok", "notes": ["epoch 2: class accuracy 1.0"]},
                         {"title": "b2_3: failed", "status": "error: no trained model at x"}],
                        tmp_path / "report.html", "report").read_text()
    assert "<p class='meta'>epoch 2: class accuracy 1.0</p>" in page
    assert page.count("class='missing'") == 1 and "<p class='missing'>error: no trained model at x</p>" in page


def test_the_moving_average_is_centred_on_its_window():
    """A straight line is its own centred moving average (a trailing one would lag by (window - 1) / 2 steps)."""
    losses = 3.0 - 0.01 * np.arange(1, 201)                                     # loss at 1-based step k: 3 - 0.01 k
    centres, means = moving_average(losses, 50)
    assert len(means) == 151 and centres[0] == 25.5 and centres[-1] == 175.5
    np.testing.assert_allclose(means, 3.0 - 0.01 * centres)


def test_report_writes_each_part_heading_once_above_its_sections(tmp_path):
    from minidiff.viz import write_report
    sections = [{"title": "a1_1: x", "part": "Part A"}, {"title": "a1_2: y", "part": "Part A"},
                {"title": "b1_2: z", "part": "Part B"}]
    page = write_report(sections, tmp_path / "report.html", "report").read_text()
    assert page.count("<h1 class='part'>Part A</h1>") == 1 and page.count("<h1 class='part'>Part B</h1>") == 1
    assert page.index("Part A</h1>") < page.index("a1_1: x") < page.index("Part B</h1>") < page.index("b1_2: z")
