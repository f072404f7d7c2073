"""A tiny causal language model made in memory, in seconds: a BPE tokenizer trained on a few
sentences (with `tokenizers`) and a 2-layer GPT-2 with random weights (seeded), as the files of
a Hugging Face model folder. Needs the serve extra. `escrow demo --hosted` deposits and hosts
it; tests/hosted and bench/hosted.py do too."""

from __future__ import annotations

import json

SENTENCES = [
    "The escrow keeps the weights of retired models safe for research.",
    "A researcher asks for access and the reviewers decide under a written policy.",
    "Every key release is on the audit log, and revocation stops the next request.",
    "The model worker decrypts into memory only and serves the broker on loopback.",
] * 4


def tiny_model_files(seed: int = 7, width: int = 64, layers: int = 2) -> dict[str, bytes]:
    """The model folder's files ({path: bytes}); bench/hosted.py asks for a wider, deeper one."""
    import safetensors.torch
    import tokenizers
    import torch
    import transformers

    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None))
    # Metaspace, not byte-level: every token is whole characters, so random weights still
    # make readable text (no half characters to hold back in a stream)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    tokenizer.decoder = tokenizers.decoders.Metaspace()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                             show_progress=False)
    tokenizer.train_from_iterator(SENTENCES, trainer)
    vocab = tokenizer.get_vocab_size()
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=128, n_embd=width, n_layer=layers, n_head=2,
        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config)
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if k != "lm_head.weight"}  # tied to the embeddings, as Hugging Face saves it
    return {
        "config.json": json.dumps(config.to_dict()).encode(),
        "tokenizer.json": tokenizer.to_str().encode(),
        "tokenizer_config.json": json.dumps({"eos_token": "<|endoftext|>"}).encode(),
        "model.safetensors": safetensors.torch.save(state),
    }
