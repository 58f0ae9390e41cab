"""Shared test settings: one torch thread (the tests use tiny tensors; threads only contend), no hub access."""
import os
import socket

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a server a test starts (JupyterLab, JupyterHub, PostgreSQL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_gpt2_shaped(folder, texts, vocab_size: int, n_layer: int = 2, n_embd: int = 16, n_positions: int = 32):
    """Save a folder laid out like the Hub's "gpt2" into ``folder``: a random GPT2LMHeadModel (seed 0) and a
    byte-level BPE trained on ``texts``, with EOS = BOS = UNK = <|endoftext|> and no pad token (as gpt2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                                       show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = GPT2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                            unk_token="<|endoftext|>")
    assert tok.pad_token is None                                   # like the Hub's gpt2 tokenizer
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_world():
    """The course tokenizer and a random 1-layer GPT-2 (fast), as policy (eval mode) and frozen reference; one per
    test module."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignlab import paths
    from alignlab.models import frozen_copy, load_tokenizer

    if not (paths.TINY_POLICY_DIR / "tokenizer.json").exists():
        pytest.skip("the embedded tokenizer is not built")
    tok = load_tokenizer(paths.TINY_POLICY_DIR)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    policy = GPT2LMHeadModel(config).eval()
    return tok, policy, frozen_copy(policy)
