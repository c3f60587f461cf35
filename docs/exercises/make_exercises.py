"""Write each exercise from its solution, with the answers taken out:
`python docs/exercises/make_exercises.py` (tests/test_exercises.py checks that
the two still agree, so an exercise cannot drift from its solution).

In a solution, the learner's lines are marked:
- `name = expression  # answer: note` (or `+=`) becomes `name = ...  # TODO: note`
  (`a, b = ..., ...` for two names);
- the lines from `# answer { STUB` to `# answer }` become the one line `STUB  # TODO`
  (`...` when no STUB is given), at the marker's indentation.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINE = re.compile(r"^(\s*)(.+?)\s(=|\+=)\s.+?\s*# answer(.*)$")
BLOCK = re.compile(r"^(\s*)# answer \{(.*)$")
END = re.compile(r"^\s*# answer \}\s*$")


def strip_answers(solution: str) -> str:
    out, lines, i = [], solution.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        block = BLOCK.match(line)
        if block:
            indent, stub = block.group(1), block.group(2).strip() or "..."
            while not END.match(lines[i]):
                i += 1
                if i == len(lines):
                    raise ValueError(f"an `# answer {{` with no `# answer }}` after it: {line.strip()!r}")
            out.append(f"{indent}{stub}  # TODO")
        elif (m := LINE.match(line)):
            stub = ", ".join(["..."] * (m.group(2).count(",") + 1))   # `a, b = ...` could not unpack
            out.append(f"{m.group(1)}{m.group(2)} {m.group(3)} {stub}  # TODO{m.group(4)}")
        else:
            out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def main() -> int:
    for solution in sorted((HERE / "solutions").glob("[0-9]*_*.py")):
        target = HERE / solution.name
        text = strip_answers(solution.read_text())
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(target)
        print(f"wrote {target.relative_to(HERE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
