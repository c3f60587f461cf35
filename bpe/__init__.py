"""A byte-level BPE tokenizer, readable and compatible with tiktoken and GPT-2.

    from bpe import Tokenizer
    tok = Tokenizer.train(text, vocab_size=4096, special_tokens=["<|endoftext|>"])
    ids = tok.encode("hello world")
    assert tok.decode(ids) == "hello world"

It answers tiktoken's `Encoding` API (`encode(text, disallowed_special=())`,
`eot_token`, `n_vocab`, ...), and `Tokenizer.load_tiktoken` reads any
tiktoken encoding's rank file.
"""

from .files import TokenizerFileError
from .pretokenize import CL100K_PATTERN, GPT2_PATTERN, O200K_PATTERN
from .tokenizer import SpecialTokenError, TokenIdError, Tokenizer

__all__ = ["CL100K_PATTERN", "GPT2_PATTERN", "O200K_PATTERN", "SpecialTokenError", "TokenIdError", "Tokenizer", "TokenizerFileError"]
