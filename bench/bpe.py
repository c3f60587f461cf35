"""Benchmark the BPE tokenizer against tiktoken and Hugging Face `tokenizers`.

    python bench/bpe.py            # Tiny Shakespeare (vocab 4096 and 16384) + Gutenberg 10 MB
    python bench/bpe.py --quick    # Tiny Shakespeare only, training at vocab 4096 only
    BENCH_QUICK=1 python bench/bpe.py   # seconds: bpe/'s own source as the text, vocab 512, no ../shared

Training is compared with HF `tokenizers` (byte-level BPE, GPT-2 pre-tokenizer,
one thread per core as it defaults to); encoding with tiktoken on the very same
ranks (GPT-2's), pattern and special tokens: cold and warm cache on one core,
encode_batch on two (beside the most two processes can do on this machine,
bench/ceiling.py), and one 1 MB pre-token. Then tiktoken's other entry
points, `encode_to_numpy` and `encode_ordinary_batch`, each as a speed ratio
to plain `encode`, ours beside tiktoken's: code moved from tiktoken should
find each as fast, relative to `encode`, as it was. Missing comparison
libraries are skipped. Timings on a shared machine are noisy: compare the
ratios of one run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_quick import QUICK  # noqa: E402  (bench/bench_quick.py: bench/ is on the path)
from bpe import Tokenizer  # noqa: E402
from ceiling import parallel_ceiling  # noqa: E402  (bench/ is on the path: this script's folder)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPECIALS = ["<|endoftext|>"]


def best_of(repeats: int, fn) -> tuple[float, object]:
    """Fastest wall time of `repeats` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def hf_train(text_or_path: str | Path, vocab_size: int) -> float | None:
    try:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers
    except ImportError:
        return None

    def run() -> None:
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        if isinstance(text_or_path, Path):
            hf.train([str(text_or_path)], trainer)
        else:
            hf.train_from_iterator(text_or_path.splitlines(keepends=True), trainer)

    return best_of(1, run)[0]


def _train_in_child(path: Path, vocab_size: int, queue) -> None:
    start = time.perf_counter()
    Tokenizer.train(path, vocab_size, SPECIALS, progress=False)
    queue.put((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def train_file_with_peak_memory(path: Path, vocab_size: int) -> tuple[float, float]:
    """Train from a path in a fresh process; returns (seconds, peak RSS in MiB)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_train_in_child, args=(path, vocab_size, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def row(table: list, what: str, ours: float, theirs: float | None, unit: str, higher_is_better: bool) -> None:
    if theirs is None:
        table.append((what, f"{ours:.3g} {unit}", "n/a", "n/a"))
        return
    ratio = ours / theirs if higher_is_better else theirs / ours
    table.append((what, f"{ours:.3g} {unit}", f"{theirs:.3g} {unit}", f"{ratio:.2f}x"))


def tiktoken_twin(tok: Tokenizer):
    """tiktoken on the same ranks, pattern and special tokens, or None without tiktoken."""
    try:
        import tiktoken
    except ImportError:
        return None
    return tiktoken.Encoding("bench", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(), special_tokens=tok.special_tokens)


def bench_encoding(table: list, fresh, name: str, text: str) -> None:
    """Cold and warm cache, one process, against tiktoken's one thread; then encode_batch.

    `fresh()` makes a tokenizer with an empty cache; cold is the best first encode of three.
    """
    mb = len(text.encode("utf-8")) / 1e6
    cold = float("inf")
    for _ in range(3):
        tok = fresh()
        seconds, ids = best_of(1, lambda: tok.encode(text))
        cold = min(cold, seconds)
    enc = tiktoken_twin(tok)
    warm, _ = best_of(5, lambda: tok.encode(text))
    theirs = best_of(5, lambda: enc.encode(text))[0] if enc else None
    if enc:
        assert enc.encode(text) == ids, "encode differs from tiktoken"
    row(table, f"encode {name}, cold cache (vs tiktoken 1 thread)", mb / cold, mb / theirs if enc else None, "MB/s", True)
    row(table, f"encode {name}, warm cache (vs tiktoken 1 thread)", mb / warm, mb / theirs if enc else None, "MB/s", True)

    paragraphs = text.split("\n\n")
    single, _ = best_of(3, lambda: tok.encode_batch(paragraphs, workers=1))
    batch, _ = best_of(3, lambda: tok.encode_batch(paragraphs, workers=2))
    row(table, f"encode_batch {name} paragraphs, 2 processes (vs 1)", mb / batch, mb / single, "MB/s", True)
    table.append(("  the most 2 processes can do here (bench/ceiling.py)", "", "", f"{parallel_ceiling(2):.2f}x"))
    if enc:
        theirs_batch = best_of(3, lambda: enc.encode_batch(paragraphs, num_threads=2))[0]
        row(table, f"encode_batch {name} paragraphs (vs tiktoken 2 threads)", mb / batch, mb / theirs_batch, "MB/s", True)


def bench_api_ratios(table: list, tok: Tokenizer, name: str, text: str) -> None:
    """encode_to_numpy and encode_ordinary_batch as throughput / plain encode's (warm cache), ours beside tiktoken's."""
    enc = tiktoken_twin(tok)
    paragraphs = text.split("\n\n")
    tok.encode(text)
    plain = best_of(5, lambda: tok.encode(text))[0]
    to_numpy, ids = best_of(5, lambda: tok.encode_to_numpy(text))
    batch = best_of(3, lambda: tok.encode_ordinary_batch(paragraphs))[0]
    theirs = None
    if enc:
        assert enc.encode_to_numpy(text).tolist() == ids.tolist(), "encode_to_numpy differs from tiktoken"
        assert enc.encode_ordinary_batch(paragraphs) == tok.encode_ordinary_batch(paragraphs), "encode_ordinary_batch differs"
        their_plain = best_of(5, lambda: enc.encode(text))[0]
        theirs = (their_plain / best_of(5, lambda: enc.encode_to_numpy(text))[0],
                  their_plain / best_of(3, lambda: enc.encode_ordinary_batch(paragraphs))[0])  # fmt: skip
    for i, (what, seconds) in enumerate((("encode_to_numpy", to_numpy), ("encode_ordinary_batch (num_threads=8)", batch))):
        ours = plain / seconds
        if theirs is None:
            table.append((f"{what} {name}: speed / encode's (vs tiktoken's ratio)", f"{ours:.2f}", "n/a", "n/a"))
        else:
            table.append((f"{what} {name}: speed / encode's (vs tiktoken's ratio)", f"{ours:.2f}", f"{theirs[i]:.2f}", f"{ours / theirs[i]:.2f}x"))


def bench_long_piece(table: list, tok: Tokenizer, n: int) -> None:
    """One pre-token of n bytes (a run of one character): the O(n log n) path, as time against tiktoken's."""
    text = "a" * n
    ours, ids = best_of(1, lambda: tok.encode(text))
    enc = tiktoken_twin(tok)
    if enc is None:
        table.append((f"encode {n:,} bytes of 'a' (one pre-token)", f"{ours:.3g} s", "n/a", "n/a"))
        return
    theirs, reference = best_of(1, lambda: enc.encode(text))
    assert ids == reference, "encode differs from tiktoken"
    table.append((f"encode {n:,} bytes of 'a' (one pre-token; time / tiktoken's, target <= 5x)", f"{ours:.3g} s", f"{theirs:.3g} s", f"{ours / theirs:.2f}x"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny Shakespeare only, training at vocab 4096 only")
    args = parser.parse_args()
    tiny = QUICK  # the same code on a tiny configuration

    shakespeare = DATA / "tinyshakespeare.txt"
    if tiny:
        args.quick = True
        sources = sorted((Path(__file__).parents[1] / "bpe").glob("*.py"))
        text = "\n\n".join(path.read_text(encoding="utf-8") for path in sources).replace(SPECIALS[0], "<endoftext>")
    elif not shakespeare.is_file():
        sys.exit(f"missing {shakespeare}")
    else:
        text = shakespeare.read_text(encoding="utf-8")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    table: list[tuple[str, str, str, str]] = []

    trained = None
    for vocab_size in (512,) if tiny else (4096,) if args.quick else (4096, 16384):
        seconds, tok = best_of(1 if args.quick else 2, lambda: Tokenizer.train(text, vocab_size, SPECIALS, progress=False))
        trained = trained or tok
        row(table, f"train shakespeare -> {vocab_size} (vs HF)", seconds, hf_train(text, vocab_size), "s", False)

    gutenberg = DATA / "gutenberg_classics.txt"
    if not args.quick and gutenberg.is_file():
        seconds, peak = train_file_with_peak_memory(gutenberg, 16384)
        row(table, "train gutenberg 9.75 MB path -> 16384 (vs HF)", seconds, hf_train(gutenberg, 16384), "s", False)
        table.append(("  peak memory of that training (RSS)", f"{peak:.0f} MiB", "", ""))

    # Encoding uses GPT-2's ranks where the shared files are, else the tokenizer trained above.
    gpt2_files = DATA / "gpt2" / "encoder.json", DATA / "gpt2" / "vocab.bpe"
    use_gpt2 = not tiny and all(f.is_file() for f in gpt2_files)
    fresh = (lambda: Tokenizer.from_gpt2(*gpt2_files)) if use_gpt2 else (
        lambda: Tokenizer(trained.merges, trained.pattern, list(trained.special_tokens))
    )
    table.append((f"(encoding with {'GPT-2' if use_gpt2 else 'the trained'} ranks)", "", "", ""))
    name = "bpe/*.py" if tiny else "shakespeare"
    bench_encoding(table, fresh, name, text)
    if not args.quick and gutenberg.is_file():
        bench_encoding(table, fresh, "gutenberg", gutenberg.read_text(encoding="utf-8"))
    bench_long_piece(table, fresh(), 20_000 if tiny else 1_000_000)
    bench_api_ratios(table, fresh(), name, text)

    widths = [max(len(r[i]) for r in [("what", "ours", "theirs", "ratio")] + table) for i in range(4)]
    for line in [("what", "ours", "theirs", "ratio")] + table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))
    print(f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.2f}; ratio > 1 means ours is faster "
          "(time ratio for training, throughput ratio for encoding), except the 1 MB row (our time / tiktoken's)")


if __name__ == "__main__":
    main()
