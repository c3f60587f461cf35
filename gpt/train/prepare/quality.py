"""Quality rules of the Gopher / C4 kind (Rae et al. 2021, Raffel et al. 2020): each a
name and a readable test, so a dropped document is counted under the first rule it fails.

The bounds suit prose: the word-count ceiling is far above Gopher's 100,000 because
a whole book is one document here, and few wrapped lines end a sentence, so the
punctuation floor is low; what it catches is text with no sentences at all (lists,
tables, menus)."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

TERMINAL = tuple('.!?"\'”’»)…:;')   # a line that ends a sentence or a quotation
SYMBOLS = ("#", "...", "…")


@dataclass(frozen=True)
class QualityRules:
    min_words: int = 50
    max_words: int = 1_000_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbols_per_word: float = 0.1
    min_lines_ending_in_punctuation: float = 0.1
    max_repeated_lines: float = 0.3         # share of lines that repeat an earlier line
    max_repeated_paragraphs: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)

    def reason(self, text: str) -> str | None:
        """The name of the first rule `text` fails, or None when it passes them all."""
        words = text.split()
        if len(words) < self.min_words:
            return "too_short"
        if len(words) > self.max_words:
            return "too_long"
        mean = sum(map(len, words)) / len(words)
        if not self.min_mean_word_length <= mean <= self.max_mean_word_length:
            return "mean_word_length"
        if sum(text.count(s) for s in SYMBOLS) / len(words) > self.max_symbols_per_word:
            return "symbols"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if sum(line.endswith(TERMINAL) for line in lines) < self.min_lines_ending_in_punctuation * len(lines):
            return "no_punctuation"
        if _repeated_share(lines) > self.max_repeated_lines:
            return "repeated_lines"
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        if _repeated_share(paragraphs) > self.max_repeated_paragraphs:
            return "repeated_paragraphs"
        return None


RULES = ("too_short", "too_long", "mean_word_length", "symbols", "no_punctuation", "repeated_lines",
         "repeated_paragraphs")


def _repeated_share(items: list[str]) -> float:
    """The share of `items` that are copies of an earlier item."""
    if not items:
        return 0.0
    return sum(n - 1 for n in Counter(items).values()) / len(items)
