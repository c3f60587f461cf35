"""Draw docs/img/mlp.svg and docs/img/attention.svg: the two graphs that
docs/engine.md builds (`mlp_loss`, `block_loss`), run from that page itself so
the pictures show exactly its code. Needs Graphviz's `dot`:
`python docs/img/make_graphs.py` (tests/test_docs.py checks the committed
pictures' boxes against a fresh drawing, without needing `dot`)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tinytensor as tt

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "engine.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PICTURES = {"mlp.svg": ("mlp_loss", "mlp_names", "LR"), "attention.svg": ("block_loss", "block_names", "TB")}


def page_namespace() -> dict:
    """Run engine.md's python blocks in order; the namespace they leave."""
    namespace: dict = {"__name__": "docs.engine"}
    for code in FENCE.findall(PAGE.read_text()):
        exec(compile(code, str(PAGE), "exec"), namespace)
    return namespace


def dot_text(picture: str, namespace: dict) -> str:
    """The DOT text draw_graph writes for one picture, laid out in the picture's direction."""
    loss, names, rankdir = PICTURES[picture]
    with tempfile.TemporaryDirectory() as folder:
        text = tt.draw_graph(namespace[loss], Path(folder) / "graph.dot", names=namespace[names]).read_text()
    return text.replace("rankdir=LR;", f"rankdir={rankdir};")


def main() -> int:
    dot = shutil.which("dot")
    if dot is None:
        print("make_graphs: needs Graphviz's `dot` (apt-get install graphviz, or brew install graphviz)",
              file=sys.stderr)
        return 2
    namespace = page_namespace()
    for picture in PICTURES:
        target = HERE / picture
        tmp = target.with_suffix(".tmp")
        subprocess.run([dot, "-Tsvg", "-o", str(tmp)], input=dot_text(picture, namespace), text=True, check=True)
        tmp.replace(target)
        print(f"wrote {target.relative_to(HERE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
