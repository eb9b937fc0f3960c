"""notebooks/colab_walkthrough.ipynb, executed as CI can: every code cell in order, in one namespace, with the
parameter cell switched to the MNIST backbone (a CPU, no Hub), inside this checkout. The figures it shows exist."""
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "colab_walkthrough.ipynb"


def test_the_walkthrough_runs_on_the_cpu_with_the_mnist_backbone(tmp_path, monkeypatch, capsys):
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    assert "".join(cells[0]["source"]).startswith("# Parameters")
    monkeypatch.chdir(REPO)
    namespace = {}
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[{i}]", "exec"), namespace)
        if i == 0:                                         # what a learner without a GPU changes
            namespace.update(BACKBONE="mnist", OUT=str(tmp_path / "out"))
    shown = [line for line in capsys.readouterr().out.splitlines() if line.endswith(".png") and " " not in line]
    assert shown == [str(tmp_path / "out" / f) for f in ("a1_6_cfg/samples.png", "a1_8_visual_anagrams/anagrams.png")]
    assert all(Path(f).is_file() for f in shown)
