"""A byte-level BPE tokenizer, readable and compatible with tiktoken and GPT-2.

    from bpe import Tokenizer
    tok = Tokenizer.train(text, vocab_size=4096, special_tokens=["<|endoftext|>"])
    ids = tok.encode("hello world")
    assert tok.decode(ids) == "hello world"
"""

from .files import TokenizerFileError
from .pretokenize import CL100K_PATTERN, GPT2_PATTERN
from .tokenizer import SpecialTokenError, Tokenizer

__all__ = ["CL100K_PATTERN", "GPT2_PATTERN", "SpecialTokenError", "Tokenizer", "TokenizerFileError"]
