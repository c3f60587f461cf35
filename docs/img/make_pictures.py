"""Draw the explanatory pictures of docs/ as plain SVG, no dependency:
`python docs/img/make_pictures.py` writes each into docs/img/ (the pages show
them beside the sentence and the assert they illustrate; tests/test_docs.py
checks the committed files are what this script draws)."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FONT = 'font-family="Helvetica, Arial, sans-serif"'
INK, FWD, BWD, SKIP, PART, FULL = "#333333", "#1f5fa8", "#c0392b", "#eeeeee", "#fde9b0", "#f5b041"


def svg(width: int, height: int, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">\n'
            '<defs><marker id="f" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
            f'<path d="M0,0 L8,4 L0,8 z" fill="{FWD}"/></marker>'
            '<marker id="b" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
            f'<path d="M0,0 L8,4 L0,8 z" fill="{BWD}"/></marker></defs>\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def text(x: float, y: float, s: str, size: int = 13, anchor: str = "middle", colour: str = INK) -> str:
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f'<text x="{x}" y="{y}" {FONT} font-size="{size}" text-anchor="{anchor}" fill="{colour}">{s}</text>'


def box(x: float, y: float, w: float, h: float, label: str, sub: str = "", fill: str = "#fff2cc") -> list[str]:
    out = [f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" stroke="{INK}"/>',
           text(x + w / 2, y + (h / 2 if not sub else h / 2 - 3), label, 14)]
    if sub:
        out.append(text(x + w / 2, y + h / 2 + 13, sub, 11))
    return out


def arrow(x1: float, y1: float, x2: float, y2: float, colour: str = FWD, label: str = "", dy: float = -5) -> list[str]:
    mark = "f" if colour == FWD else "b"
    out = [f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{colour}" stroke-width="1.6" '
           f'marker-end="url(#{mark})"/>']
    if label:
        out.append(text((x1 + x2) / 2, (y1 + y2) / 2 + dy, label, 11, colour=colour))
    return out


def attention_dataflow() -> str:
    """Forward (blue, left to right) and backward (red, right to left) of one head, with shapes."""
    b: list[str] = [text(20, 24, "forward", 13, "start", FWD), text(20, 232, "backward", 13, "start", BWD)]
    nodes = [("Q", "(Tq, D)", 20, 50), ("K", "(Tk, D)", 20, 130), ("S", "(Tq, Tk)", 170, 90),
             ("P", "(Tq, Tk)", 320, 90), ("Pd", "(Tq, Tk)", 470, 90), ("V", "(Tk, Dv)", 470, 170),
             ("O", "(Tq, Dv)", 620, 130)]
    for name, shape, x, y in nodes:
        b += box(x, y, 90, 44, name, shape)
    b += arrow(110, 72, 170, 106, label="s Q K^T", dy=-12) + arrow(110, 152, 170, 118)
    b += arrow(260, 112, 320, 112, label="softmax") + arrow(410, 112, 470, 112, label="x M/(1-p)")
    b += arrow(560, 112, 620, 146, label="Pd V", dy=-10) + arrow(560, 192, 620, 160)
    b += [text(360, 262, "dPd = dO V^T    dV = Pd^T dO    dP = dPd x M/(1-p)", 12, colour=BWD),
          text(360, 282, "dS = P x (dP - Delta),  Delta = rowsum(dO x O)  (Tq, 1)", 12, colour=BWD),
          text(360, 302, "dQ = s dS K    dK = s dS^T Q      every row of dS sums to 0", 12, colour=BWD)]
    b += arrow(700, 200, 600, 240, BWD) + arrow(120, 240, 40, 200, BWD)
    return svg(740, 320, b)


def causal_blocks(n: int = 4) -> str:
    """n blocks of query rows, each against the keys it can see: below the diagonal computed, on it masked
    inside, above skipped (attention.md's example: T = 128 in 4 blocks of 32 rows)."""
    cell, x0, y0 = 56, 95, 50
    b = [text(x0 + n * cell / 2, 30, "keys ->", 13), text(45, y0 + n * cell / 2, "query rows", 13)]
    for i in range(n):
        for j in range(n):
            fill = FULL if j < i else PART if j == i else SKIP
            b.append(f'<rect x="{x0 + j * cell}" y="{y0 + i * cell}" width="{cell}" height="{cell}" '
                     f'fill="{fill}" stroke="white" stroke-width="2"/>')
            if j == i:
                b.append(f'<path d="M{x0 + j * cell},{y0 + i * cell} L{x0 + j * cell},{y0 + (i + 1) * cell} '
                         f'L{x0 + (j + 1) * cell},{y0 + (i + 1) * cell} z" fill="{FULL}"/>')
    lx = x0 + n * cell + 30
    for k, (fill, label) in enumerate([(FULL, "computed: every key seen"), (PART, "diagonal block: masked inside"),
                                       (SKIP, "skipped: all in the future")]):
        b.append(f'<rect x="{lx}" y="{y0 + 30 * k}" width="18" height="18" fill="{fill}" stroke="{INK}"/>')
        b.append(text(lx + 26, y0 + 30 * k + 14, label, 12, "start"))
    b.append(text(lx, y0 + 120, f"block i sees keys [0, its last row]: {n * (n + 1) // 2} of {n * n} tiles,", 12,
                  "start"))
    b.append(text(lx, y0 + 138, f"(n + 1) / 2n = {100 * (n + 1) / (2 * n):g}% of the square", 12, "start"))
    return svg(lx + 360, y0 + n * cell + 20, b)


def gqa_heads(h: int = 8, hkv: int = 2) -> str:
    """Query head i reads key/value head i // G; the G gradients into a shared head add up."""
    g = h // hkv
    b = [text(20, 30, f"H = {h} query heads", 13, "start"),
         text(20, 190, f"H_kv = {hkv} key/value heads, G = {g}", 13, "start")]
    qx = [40 + 70 * i for i in range(h)]
    kx = [40 + 70 * (g * j) + 70 * (g - 1) / 2 for j in range(hkv)]
    colours = ["#aed6f1", "#f9e79f", "#d5f5e3", "#f5cba7"]
    for i, x in enumerate(qx):
        b += box(x, 45, 50, 34, f"q{i}", fill=colours[(i // g) % len(colours)])
        b.append(f'<line x1="{x + 25}" y1="79" x2="{kx[i // g] + 25}" y2="140" stroke="{INK}"/>')
    for j, x in enumerate(kx):
        b += box(x, 140, 50, 34, f"kv{j}", fill=colours[j % len(colours)])
    b.append(text(20, 222, "backward: dK_j = sum over its G query heads (a repeat is a sum, and back)", 12,
                  "start", BWD))
    return svg(qx[-1] + 90, 236, b)


def rope_pairs(d: int = 8) -> str:
    """RoPE pairs entry i with entry i + D/2 and rotates each pair by its own angle."""
    half, w = d // 2, 56
    b = [text(20, 26, f"one head of D = {d}: pairs (x_i, x_i+D/2), rotated by angle t * theta_i", 13, "start")]
    for i in range(d):
        b += box(30 + i * w, 80, w - 8, 36, f"x{i}", fill="#aed6f1" if i < half else "#f9e79f")
    for i in range(half):
        x1, x2 = 30 + i * w + (w - 8) / 2, 30 + (i + half) * w + (w - 8) / 2
        top = 76 - 12 * (i + 1)
        b.append(f'<path d="M{x1},80 C{x1},{top} {x2},{top} {x2},80" fill="none" stroke="{FWD}"/>')
    b.append(text(30, 150, "forward: (a, b) -> (a cos - b sin, b cos + a sin)", 12, "start", FWD))
    b.append(text(30, 170, "backward: the same rotation by -angle (R^T = R^-1), so |dx| = |dy|", 12, "start", BWD))
    return svg(30 + d * w + 80, 186, b)


def layernorm_projection() -> str:
    """dx = rho (g - its part along 1 - its part along xhat): a projection onto the plane orthogonal to both."""
    b = [text(20, 26, "layer norm's dx: the gradient with its parts along 1 and along xhat taken out", 13, "start")]
    b.append(f'<polygon points="60,230 300,230 380,150 140,150" fill="#eaf2f8" stroke="{INK}"/>')
    b.append(text(330, 222, "plane orthogonal to 1 and xhat", 11, "start"))
    b += arrow(200, 200, 290, 70, colour=INK)
    b.append(text(238, 130, "dxhat = dy * w", 12, "end"))
    b.append(f'<line x1="290" y1="70" x2="290" y2="186" stroke="{INK}" stroke-dasharray="4,3"/>')
    b += arrow(200, 200, 288, 186, colour=BWD)
    b.append(text(300, 200, "dx / rho", 12, "start", BWD))
    b.append(text(20, 260, "asserted on the page: dx . 1 = 0, and dx . xhat = 0 (up to eps)", 12, "start"))
    return svg(600, 276, b)


def residual_gradient() -> str:
    """The residual stream carries dout unchanged past each branch; each branch adds its part."""
    sx, bx = 170, 360                                    # the stream's column, the branches'
    b = [text(20, 24, "one block: the gradient (red) flows down the stream and into each branch", 13, "start")]
    b += box(sx, 40, 90, 34, "x", fill="#dae8fc") + box(sx, 170, 90, 34, "x1", fill="#dae8fc")
    b += box(sx, 300, 90, 34, "out", fill="#dae8fc")
    b += box(bx, 100, 150, 34, "LN1, attention") + box(bx, 230, 150, 34, "LN2, MLP")
    b += arrow(sx + 35, 74, sx + 35, 170) + arrow(sx + 35, 204, sx + 35, 300)
    b += arrow(sx + 90, 57, bx, 117) + arrow(bx, 130, sx + 90, 182)
    b += arrow(sx + 90, 187, bx, 247) + arrow(bx, 260, sx + 90, 312)
    b += arrow(sx + 55, 300, sx + 55, 204, BWD) + arrow(sx + 55, 170, sx + 55, 74, BWD)
    b.append(text(sx - 10, 126, "dx = dx1", 11, "end", BWD))
    b.append(text(sx - 10, 140, "+ LN1'(attn'(dx1))", 11, "end", BWD))
    b.append(text(sx - 10, 256, "dx1 = dout", 11, "end", BWD))
    b.append(text(sx - 10, 270, "+ LN2'(MLP'(dout))", 11, "end", BWD))
    b.append(text(20, 362, "an add sends its gradient unchanged to both inputs: dx = dout + (branch terms)", 12,
                  "start"))
    return svg(540, 376, b)


PICTURES = {"attention-dataflow.svg": attention_dataflow, "causal-blocks.svg": causal_blocks,
            "gqa-heads.svg": gqa_heads, "rope-pairs.svg": rope_pairs,
            "layernorm-projection.svg": layernorm_projection, "residual-gradient.svg": residual_gradient}


def main() -> int:
    for name, draw in PICTURES.items():
        target = HERE / name
        tmp = target.with_suffix(".tmp")
        tmp.write_text(draw())
        tmp.replace(target)
        print(f"wrote {target.relative_to(HERE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
