"""Classification fine-tuning: data parsing, padding, last-token selection, training, checkpoints, CLI."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import as_numpy, write_model_folder

import train

import tinytensor as tt
import tinytensor.functional as F
from bpe import Tokenizer
from gpt import GPT, GPTClassifier, GPTConfig
from gpt.train.cli import main
from gpt.train.classify import balance, classify_texts, label_ids, pad_batch, read_labeled
from gpt.train.settings import ClassifyConfig
from gpt.train.finetune import finetune_classifier
from gpt.train.folders import load_finetuned
from gpt.train.inference import load_base
from gpt.lora import LoRALinear
from tinytensor import optim

HAM = ["see you at home tonight", "ok lar joking", "i am on the bus now", "call me when you are free",
       "what time is dinner", "sorry i missed your call", "lunch tomorrow?", "the meeting moved to noon"]
SPAM = ["WIN a FREE prize now!!! txt WIN to 80082", "URGENT you have won cash call 09061", "free entry to win tickets txt now",
        "claim your prize reward call now", "you are a WINNER of 1000 cash", "txt STOP to end free ringtones",
        "congratulations you won a holiday call", "FREE mobile upgrade text YES now"]


def write_base(folder, texts, n_layer=1, n_embd=16, block_size=48) -> GPT:
    """A model folder with a random tiny GPT over a tokenizer trained on `texts`."""
    tok = Tokenizer.train(texts, vocab_size=300, special_tokens=["<|endoftext|>"], progress=False)
    return write_model_folder(folder, tok, n_layer, n_embd, block_size)


def write_tsv(path, pairs):
    path.write_text("".join(f"{label}\t{text}\n" for label, text in pairs))
    return path


# ---- data --------------------------------------------------------------------------
def test_tsv_splits_at_the_first_tab_without_quoting(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('ham\tsay "hi\tthere"\n\nspam\t"free" prize\n')
    assert read_labeled(path) == [("ham", 'say "hi\tthere"'), ("spam", '"free" prize')]
    path.write_text("Label\tText\nham\tok\nlabel\ttext\n")   # a header first is skipped, later it is data
    assert read_labeled(path) == [("ham", "ok"), ("label", "text")]


def test_csv_and_jsonl(tmp_path):
    (tmp_path / "d.csv").write_text('label,text\nham,"hello, you"\nspam,win\n')
    assert read_labeled(tmp_path / "d.csv") == [("ham", "hello, you"), ("spam", "win")]
    (tmp_path / "d.jsonl").write_text('{"text": "hi", "label": "ham"}\n{"text": "win", "label": 1}\n')
    assert read_labeled(tmp_path / "d.jsonl") == [("ham", "hi"), ("1", "win")]


def test_clear_errors_for_bad_data(tmp_path):
    (tmp_path / "empty.tsv").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no examples"):
        read_labeled(tmp_path / "empty.tsv")
    (tmp_path / "notab.tsv").write_text("ham\thello\nspam hello\n")
    with pytest.raises(ValueError, match=r"notab.tsv:2: no tab"):
        read_labeled(tmp_path / "notab.tsv")
    with pytest.raises(ValueError, match=r"unknown label\(s\) \['eggs'\]"):
        label_ids([("ham", "a"), ("eggs", "b")], labels=["ham", "spam"])
    with pytest.raises(FileNotFoundError):
        read_labeled(tmp_path / "absent.tsv")


def test_labels_and_balance():
    examples = [("spam", "a")] * 3 + [("ham", "b")] * 10
    names, ids = label_ids(examples)
    assert names == ["ham", "spam"] and ids.tolist() == [1] * 3 + [0] * 10
    kept, kept_ids = balance(examples, ids, seed=0)
    assert np.bincount(kept_ids).tolist() == [3, 3] and len(kept) == 6
    assert [e[0] for e in kept] == [names[i] for i in kept_ids]


def test_pad_batch_right_pads_and_truncates():
    ids, lengths, truncated = pad_batch([[5, 6, 7], [8], [1, 2, 3, 4, 5, 6]], pad_id=0, max_length=4)
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [1, 2, 3, 4]]
    assert lengths.tolist() == [3, 1, 4] and truncated == 1


# ---- model -------------------------------------------------------------------------
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_last_real_token_is_read_with_right_padding(pos, device):
    tt.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16, pos=pos)).to(device)
    clf = GPTClassifier(gpt, 3).eval()
    assert clf.head.weight.device == device
    seqs = [[3, 4, 5, 6, 7, 8], [9, 10], [11, 12, 13, 14]]
    ids, lengths, _ = pad_batch(seqs, pad_id=29, max_length=12)
    batched = clf(ids, lengths).numpy()
    for row, seq in enumerate(seqs):
        alone = clf(np.array([seq]), np.array([len(seq)])).numpy()[0]
        np.testing.assert_allclose(batched[row], alone, rtol=1e-5, atol=1e-6)
    # the padding value must not matter, nor where the lengths live
    other, _, _ = pad_batch(seqs, pad_id=1, max_length=12)
    np.testing.assert_allclose(clf(other, lengths).numpy(), batched, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clf(ids, tt.tensor(lengths, device=device).data).numpy(), batched)


def test_trainable_choices():
    clf = GPTClassifier(GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=2, n_head=2, n_embd=8)), 2)
    clf.set_trainable("head")
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    clf.set_trainable("last-block")
    names = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert {"head.weight", "gpt.ln_f.weight", "gpt.h.1.attn.c_attn.weight"} <= names
    assert not any(n.startswith(("gpt.h.0.", "gpt.wte", "gpt.wpe")) for n in names)
    clf.set_trainable("all")
    assert all(p.requires_grad for p in clf.parameters())
    with pytest.raises(ValueError, match="trainable"):
        clf.set_trainable("some")


def test_overfits_16_examples(device):
    tok = Tokenizer.train(HAM + SPAM, vocab_size=300, special_tokens=["<|endoftext|>"], progress=False)
    tt.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=16)).to(device)
    clf = GPTClassifier(gpt, 2)
    ids, lengths, _ = pad_batch(tok.encode_batch(HAM + SPAM), pad_id=0, max_length=48)
    labels = np.array([0] * 8 + [1] * 8)
    opt = optim.AdamW(clf.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(60):
        loss = F.cross_entropy(clf(ids, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    assert (clf(ids, lengths).numpy().argmax(axis=-1) == labels).all()


# ---- the training run, checkpoints, CLI ------------------------------------------------
def test_finetune_writes_a_checkpoint_the_cli_reads(tmp_path, capsys, device):
    write_base(tmp_path / "base", HAM + SPAM)
    data = write_tsv(tmp_path / "d.tsv", [("ham", t) for t in HAM] + [("spam", t) for t in SPAM])
    cfg = ClassifyConfig(init_from=str(tmp_path / "base"), data=str(data), out=str(tmp_path / "clf"), epochs=15,
                         lr=3e-3, trainable="all", eval_interval=10, batch_size=4, device=device)
    final = finetune_classifier(cfg, say=lambda s: None)
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"} <= set(final)
    assert final["train_acc"] == 1.0
    history = json.loads((tmp_path / "clf" / "metrics.json").read_text())["history"]
    assert history and "test_acc" in history[0]
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["task"] == "classify" and config["labels"] == ["ham", "spam"] and config["n_classes"] == 2

    model, tok, _ = load_finetuned(tmp_path / "clf", device=device)
    assert model.head.weight.device == device
    [(label, prob)] = classify_texts(model, tok, ["ham", "spam"], [SPAM[0]])
    assert label == "spam" and 0.5 < prob <= 1.0
    main(["classify", "--checkpoint", str(tmp_path / "clf"), SPAM[0], HAM[0], "--device", device])
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == ["spam", "ham"]


def test_warmup_applies_without_a_decay(tmp_path):
    write_base(tmp_path / "base", HAM + SPAM)
    data = write_tsv(tmp_path / "d.tsv", [("ham", t) for t in HAM] + [("spam", t) for t in SPAM])
    base = tt.load(tmp_path / "base" / "model.safetensors")
    moved = {}
    for warmup in (0, 10**6):   # lr 1.0 is huge; warming up over a million steps it stays near 0
        cfg = ClassifyConfig(init_from=str(tmp_path / "base"), data=str(data), out=str(tmp_path / f"w{warmup}"),
                             epochs=1, lr=1.0, warmup_steps=warmup, weight_decay=0.0, trainable="all",
                             eval_interval=0, batch_size=4)
        finetune_classifier(cfg, say=lambda s: None)
        weights = tt.load(tmp_path / f"w{warmup}" / "model.safetensors")
        moved[warmup] = max(float(np.abs(weights["gpt." + k] - v).max()) for k, v in base.items())
    assert moved[0] > 0.5 and moved[10**6] < 1e-4


def test_lora_classifier_saves_adapters_and_head_only(tmp_path, device):
    write_base(tmp_path / "base", HAM + SPAM, n_layer=2)
    data = write_tsv(tmp_path / "d.tsv", [("ham", t) for t in HAM] + [("spam", t) for t in SPAM])
    cfg = ClassifyConfig(init_from=str(tmp_path / "base"), data=str(data), out=str(tmp_path / "lora"), epochs=2,
                         lr=1e-2, lora_rank=2, lora_alpha=4.0, eval_interval=0, batch_size=4, device=device)
    finetune_classifier(cfg, say=lambda s: None)
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    saved = tt.load(tmp_path / "lora" / "lora.safetensors")
    assert {k for k in saved if not k.startswith("head.")} == {k for k in saved if ".lora_" in k}
    assert {"head.weight", "head.bias"} <= set(saved)
    base = tt.load(tmp_path / "base" / "model.safetensors")
    model, tok, _ = load_finetuned(tmp_path / "lora", device=device)
    assert any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.device == device for p in model.parameters())
    for name, value in base.items():   # frozen: the base weights are exactly the base checkpoint's
        np.testing.assert_array_equal(as_numpy(model.gpt.state_dict()[name]), value)

    finetune_classifier(replace(cfg, merge_lora=True, out=str(tmp_path / "merged")), say=lambda s: None)
    merged, _, _ = load_finetuned(tmp_path / "merged", device=device)
    adapted = load_finetuned(tmp_path / "lora", device=device)[0]
    ids, lengths, _ = pad_batch(tok.encode_batch(HAM[:3]), 0, 48)
    np.testing.assert_allclose(merged(ids, lengths).numpy(), adapted(ids, lengths).numpy(), rtol=1e-5, atol=1e-5)


def test_init_from_errors(tmp_path):
    write_base(tmp_path / "base", HAM)
    (tmp_path / "base" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="lacks tokenizer.json"):
        load_base(tmp_path / "base")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_base(tmp_path / "nowhere")
    tt.manual_seed(0)
    GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=8)).save_pretrained(tmp_path / "hf")
    with pytest.raises(FileNotFoundError, match="Hugging Face GPT-2 folder but lacks vocab.json, merges.txt"):
        load_base(tmp_path / "hf")


def test_empty_dataset_is_an_error(tmp_path):
    write_base(tmp_path / "base", HAM)
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(ValueError, match="no examples"):
        finetune_classifier(ClassifyConfig(init_from=str(tmp_path / "base"), data=str(tmp_path / "empty.tsv"),
                                           out=str(tmp_path / "out")), say=lambda s: None)


def test_spam_collection_parses(shared_data):
    examples = read_labeled(shared_data / "sms_spam_collection.tsv")
    names, ids = label_ids(examples)
    assert len(examples) == 5574 and names == ["ham", "spam"]
    assert np.bincount(ids).tolist() == [4827, 747]


def test_train_py_task_classify(tmp_path, capsys, device):
    write_base(tmp_path / "base", HAM + SPAM)
    data = write_tsv(tmp_path / "d.tsv", [("ham", t) for t in HAM] + [("spam", t) for t in SPAM])
    argv = ["--task", "classify", "--init-from", str(tmp_path / "base"), "--data", str(data),
            "--out", str(tmp_path / "clf"), "--epochs", "15", "--lr", "3e-3", "--batch-size", "4",
            "--trainable", "all", "--eval-interval", "0", "--device", device, "--labels", "spam,ham"]
    train.main(argv)
    assert "test accuracy" in capsys.readouterr().out
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["labels"] == ["spam", "ham"] and config["finetune"]["trainable"] == "all"
    assert config["finetune"]["device"] == device
    assert json.loads((tmp_path / "clf" / "metrics.json").read_text())["final"]["train_acc"] == 1.0
    with pytest.raises(SystemExit, match="already holds a fine-tuned model: pass --overwrite"):
        train.main(argv)
    with pytest.raises(SystemExit, match="--merge-lora needs adapters"):
        train.main(argv + ["--overwrite", "--merge-lora"])
    with pytest.raises(SystemExit, match=r"unknown label\(s\) \['spam'\]"):
        train.main(argv[:-1] + ["ham,other", "--overwrite"])
