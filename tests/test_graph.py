"""tt.draw_graph: the DOT text of a graph, its gradient norms, rendering with or without Graphviz."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from conftest import as_numpy

import tinytensor as tt
from tinytensor import functional as F
from tinytensor import graph


def tiny_mlp(device="cpu"):
    rng = np.random.default_rng(0)
    x = tt.tensor(rng.standard_normal((4, 3)), dtype=np.float64, device=device)
    w = tt.tensor(rng.standard_normal((5, 3)), requires_grad=True, dtype=np.float64, device=device)
    b = tt.tensor(rng.standard_normal(5), requires_grad=True, dtype=np.float64, device=device)
    loss = (F.gelu(F.linear(x, w, b)) ** 2).mean()
    return loss, x, w, b


def boxes(text):
    return dict(re.findall(r'^  (t\d+) \[label="([^"]*)"', text, flags=re.M))


def test_dot_text_has_a_box_per_tensor_and_an_edge_per_input(tmp_path, device):
    loss, x, w, b = tiny_mlp(device)
    path = tt.draw_graph(loss, tmp_path / "g.dot", names={"x": x, "w": w, "b": b})
    text = path.read_text()
    labels = boxes(text)
    heads = sorted(lbl.split("\\n")[0] for lbl in labels.values())
    assert heads == sorted(["x", "w", "b", "LinearFunction", "GeluTanhFunction", "PowScalar", "Mean"])
    assert len(re.findall(r" -> ", text)) == 6                 # 3 into linear, then one into each op after it
    assert 'fillcolor="#eeeeee"' in re.search(r'.*label="x\\n.*', text).group(0)   # x needs no grad: a constant
    linear = next(lbl for lbl in labels.values() if lbl.startswith("LinearFunction"))
    assert "out (4, 5) float64" in linear and "saved x2 (4, 3) view of input 0" in linear
    assert "saved w (5, 3) = input 1" in linear


def test_gradient_norms_match_backward_and_nothing_is_written_to_grad(tmp_path, device):
    loss, x, w, b = tiny_mlp(device)
    labels = boxes(tt.draw_graph(loss, tmp_path / "g.dot", names={"w": w, "b": b}).read_text())
    assert w.grad is None and b.grad is None
    loss.backward()
    by_name = {lbl.split("\\n")[0]: lbl for lbl in labels.values()}
    for name, t in (("w", w), ("b", b)):
        shown = float(re.search(r"\|grad\| = ([\d.e+-]+)", by_name[name]).group(1))
        np.testing.assert_allclose(shown, np.linalg.norm(as_numpy(t.grad)), rtol=1e-3)
    assert by_name["Mean"].endswith("|grad| = 1")              # dL/dL
    assert "|grad|" not in by_name["constant"]                 # x: nothing flows into a constant


def test_non_scalar_output_shows_norms_only_with_a_gradient(tmp_path):
    x = tt.tensor(np.ones((2, 3)), requires_grad=True, dtype=np.float64)
    y = x * 3.0
    assert "|grad|" not in tt.draw_graph(y, tmp_path / "a.dot").read_text()
    text = tt.draw_graph(y, tmp_path / "b.dot", grad=np.full((2, 3), 2.0)).read_text()
    leaf = next(lbl for lbl in boxes(text).values() if lbl.startswith("leaf"))
    assert f"|grad| = {np.sqrt(6) * 6:.4g}" in leaf              # 6 elements of 3 * 2


def test_freed_graph_and_bad_path_are_clear_errors(tmp_path):
    loss, *_ = tiny_mlp()
    with pytest.raises(ValueError, match=r"\.svg, \.png, \.pdf or \.dot"):
        tt.draw_graph(loss, tmp_path / "graph.jpg")
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        tt.draw_graph(loss, tmp_path / "g.svg")


def test_retained_graph_can_be_drawn_after_backward(tmp_path):
    loss, x, w, b = tiny_mlp()
    loss.backward(retain_graph=True)
    text = tt.draw_graph(loss, tmp_path / "g.dot", names={"w": w}).read_text()
    shown = float(re.search(r'label="w\\n[^"]*\|grad\| = ([\d.e+-]+)', text).group(1))
    np.testing.assert_allclose(shown, np.linalg.norm(w.grad), rtol=1e-3)


def test_without_graphviz_the_dot_text_is_written_with_a_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    loss, *_ = tiny_mlp()
    written = tt.draw_graph(loss, tmp_path / "g.svg")
    assert written == tmp_path / "g.dot" and written.read_text().startswith("digraph")
    assert f"dot -Tsvg {written} -o {tmp_path / 'g.svg'}" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_with_graphviz_an_svg_is_rendered(tmp_path):
    loss, *_ = tiny_mlp()
    written = tt.draw_graph(loss, tmp_path / "g.svg")
    assert written == tmp_path / "g.svg" and "<svg" in written.read_text()


def test_drawing_after_a_retained_backward_leaves_every_grad_as_it_was(tmp_path, device):
    # the extra backward pass must not add into .grad, not even through a node that
    # puts its gradient in place itself (embedding and linear use gradbuffer.slot_for)
    rng = np.random.default_rng(1)
    w = tt.tensor(rng.standard_normal((6, 3)), requires_grad=True, dtype=np.float64, device=device)
    lin = tt.tensor(rng.standard_normal((2, 3)), requires_grad=True, dtype=np.float64, device=device)
    tt.optim.SGD([w, lin], lr=0.1)                       # flat storage: gradient slots exist
    loss = (F.linear(F.embedding(np.array([0, 2, 2, 5]), w), lin) ** 2).sum()
    loss.backward(retain_graph=True)
    before = as_numpy(w.grad), as_numpy(lin.grad)
    tt.draw_graph(loss, tmp_path / "g.dot")
    np.testing.assert_array_equal(as_numpy(w.grad), before[0])
    np.testing.assert_array_equal(as_numpy(lin.grad), before[1])
