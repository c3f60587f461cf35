"""Language identification with py3langid, whose model ships inside its wheel (nothing is
downloaded). A document is kept when it is identified as one of the wanted languages
with at least the minimum confidence; the others are counted by the language found."""
from __future__ import annotations

from .optional import require

SAMPLE_CHARS = 4000   # the start of a document says its language; a whole book costs time and adds nothing
UNSURE = "low_confidence"


class LanguageFilter:
    def __init__(self, wanted: tuple[str, ...], min_confidence: float):
        langid = require("py3langid.langid", "--lang")
        self.identifier = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
        unknown = set(wanted) - set(self.identifier.labels)
        if unknown:
            raise ValueError(f"--lang: unknown language code(s) {', '.join(sorted(unknown))} "
                             f"(py3langid knows ISO 639-1 codes such as en, fr, de)")
        self.wanted, self.min_confidence = frozenset(wanted), min_confidence

    def reason(self, text: str) -> str | None:
        """None to keep `text`; else the language it was found to be, or UNSURE."""
        lang, confidence = self.identifier.classify(text[:SAMPLE_CHARS])
        if lang not in self.wanted:
            return lang
        return UNSURE if confidence < self.min_confidence else None
