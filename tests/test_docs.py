"""docs/: every ```python block of every page runs (blocks of one page in order,
in one namespace, in a fresh temporary folder), so the derivations can never
drift from the code; and the pages cover what they promise (every op, every
link)."""
from __future__ import annotations

import html
import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import tinytensor as tt
from gpt import lora, rope
from tinytensor import functional, ops
from tinytensor.tensor import Function

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(line number of the block's first line, its code) for each ```python block."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def run_page(page: Path, folder: Path) -> dict:
    """Run a page's python blocks in order in one namespace with `folder` as the working
    directory; tracebacks name the page and its line."""
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    rng_state = tt.get_rng_state()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        try:
            for line, code in python_blocks(page):
                exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
        finally:
            tt.set_rng_state(rng_state)
    return namespace


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_page_runs(page, tmp_path):
    run_page(page, tmp_path)


def test_every_page_but_the_contents_has_a_checking_block():
    for page in PAGES:
        if page.name == "README.md":
            continue
        blocks = python_blocks(page)
        assert blocks, f"{page.name} has no python block"
        assert any("assert" in code or "gradcheck" in code for _, code in blocks), f"{page.name} checks nothing"


def test_contents_lists_every_page_and_every_link_resolves():
    contents = (DOCS / "README.md").read_text()
    for page in PAGES:
        if page.name != "README.md":
            assert f"]({page.name})" in contents, f"docs/README.md does not list {page.name}"
    for page in PAGES + [DOCS.parent / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.exists(), f"{page.name} links to {target}, which does not exist"


def _function_classes(*modules) -> set[str]:
    return {name for module in modules for name, obj in vars(module).items()
            if inspect.isclass(obj) and issubclass(obj, Function) and obj is not Function
            and obj.__module__ == module.__name__}


def test_every_fused_op_is_derived_and_gradchecked_on_a_page():
    fused = _function_classes(functional, rope, lora)
    assert len(fused) >= 13
    checked_pages = [p.read_text() for p in PAGES if any("gradcheck" in code for _, code in python_blocks(p))]
    for name in fused:
        assert any(name in text for text in checked_pages), f"no page with a gradcheck names {name}"


def test_every_primitive_is_in_the_table():
    table = (DOCS / "primitives.md").read_text()
    for name in _function_classes(ops):
        assert re.search(rf"^\| `{name}` \|", table, re.M), f"primitives.md's table has no row for {name}"


def test_docs_do_not_leave_the_random_state_changed(tmp_path):
    tt.manual_seed(3)
    before = np.asarray(tt.rand(3).data)
    tt.manual_seed(3)
    run_page(DOCS / "linear-embedding-dropout.md", tmp_path)
    np.testing.assert_array_equal(np.asarray(tt.rand(3).data), before)


def _boxes_of_svg(svg: str) -> list[tuple[str, ...]]:
    """Each node's text lines in a Graphviz SVG, sorted; gradient norms without their digits."""
    boxes = []
    for node in re.findall(r'<g id="node\d+" class="node">(.*?)</g>', svg, re.S):
        lines = [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", node, re.S)]
        boxes.append(tuple(_no_digits(line) for line in lines))
    return sorted(boxes)


def _boxes_of_dot(dot: str) -> list[tuple[str, ...]]:
    """Each node's label lines in DOT text, as _boxes_of_svg gives them."""
    labels = re.findall(r'^\s*t\d+ \[label="((?:[^"\\]|\\.)*)"', dot, re.M)
    return sorted(tuple(_no_digits(line.replace('\\"', '"')) for line in label.split("\\n")) for label in labels)


def _no_digits(line: str) -> str:
    # a norm's last digit may differ with the BLAS; the op, shapes and saved buffers may not
    return "|grad| = ..." if line.startswith("|grad| = ") else line


def _make_graphs():
    spec = importlib.util.spec_from_file_location("make_graphs", DOCS / "img" / "make_graphs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_graph_pictures_match_a_fresh_drawing(tmp_path):
    make_graphs = _make_graphs()
    namespace = run_page(DOCS / "engine.md", tmp_path)
    for picture in make_graphs.PICTURES:
        committed = _boxes_of_svg((DOCS / "img" / picture).read_text())
        fresh = _boxes_of_dot(make_graphs.dot_text(picture, namespace))
        assert len(fresh) > 5 and committed == fresh, (
            f"docs/img/{picture} is not the graph engine.md draws now: run python docs/img/make_graphs.py")


def test_the_doc_pages_write_nothing_into_the_current_folder(tmp_path):
    for page in PAGES:
        if python_blocks(page):
            folder = tmp_path / page.stem
            folder.mkdir()
            run_page(page, folder)
            assert not list(folder.iterdir()), f"{page.name} wrote {[p.name for p in folder.iterdir()]} into the cwd"


def test_the_drawn_pictures_are_what_make_pictures_draws_and_each_is_shown():
    spec = importlib.util.spec_from_file_location("make_pictures", DOCS / "img" / "make_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, draw in module.PICTURES.items():
        assert (DOCS / "img" / name).read_text() == draw(), f"run python docs/img/make_pictures.py ({name})"
    shown = "".join(page.read_text() for page in PAGES)
    for picture in (DOCS / "img").glob("*.svg"):
        assert f"(img/{picture.name})" in shown, f"no page shows docs/img/{picture.name}"
