"""Shared pytest fixtures (append new fixtures; keep each one cheap or session-scoped)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

try:  # torch's thread count before any test sizes it (the clip steps set it to a worker's CPUs)
    import torch as _torch

    TORCH_THREADS_AT_START = _torch.get_num_threads()
except ImportError:
    TORCH_THREADS_AT_START = 1


@pytest.fixture(scope="session")
def torch_threads_at_start() -> int:
    return TORCH_THREADS_AT_START


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """The embedded sample processed once per session (profile dragnuwa-ld, local executor).

    Returns a namespace: ``data`` (the sample dataset folder), ``out`` (the run's output
    folder, with index.json and shards) and ``result`` (pipeline.run.RunResult).
    """
    from pipeline.config import Config
    from pipeline.run.plan import run
    from pipeline.testdata.sample_data import build_sample

    root = tmp_path_factory.mktemp("sample_run")
    data = str(root / "data")
    build_sample(data)          # returns the CSV path; the dataset root is the folder
    out = str(root / "out")
    result = run(Config(profile="dragnuwa-ld"), "sample", str(data), out, executor="local")
    return SimpleNamespace(data=str(data), out=out, result=result)


TINY_BLIP2_WORDS = ("a the cat dog red blue green moves left right up down on in of ball car sky tree "
                    "man woman runs jumps water road").split()


def save_tiny_blip2(folder, seed: int = 0, image_size: int = 32, num_query_tokens: int = 4) -> str:
    """A random-weight BLIP-2 (tiny ViT, Q-Former and OPT) with a word-level tokenizer built
    here, saved with ``save_pretrained`` as a user's model folder would be (no download)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor,
                              PreTrainedTokenizerFast)

    words = ["<pad>", "</s>", "<unk>", "<image>", *TINY_BLIP2_WORDS]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.image_token = "<image>"
    images = BlipImageProcessor(size={"height": image_size, "width": image_size})
    processor = Blip2Processor(image_processor=images, tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    v, h = len(tokenizer), 16
    config = Blip2Config(
        vision_config=dict(hidden_size=h, intermediate_size=2 * h, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        qformer_config=dict(vocab_size=v, hidden_size=h, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=2 * h, encoder_hidden_size=h, max_position_embeddings=64),
        text_config=dict(model_type="opt", vocab_size=v, hidden_size=h, num_hidden_layers=1, ffn_dim=2 * h,
                         num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=h,
                         bos_token_id=1, eos_token_id=1, pad_token_id=0),
        num_query_tokens=num_query_tokens, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_blip2(tmp_path_factory):
    """The folder of a tiny random-weight BLIP-2 (see ``save_tiny_blip2``); skips the test
    when transformers is not installed."""
    pytest.importorskip("transformers")
    return save_tiny_blip2(tmp_path_factory.mktemp("blip2") / "tiny-blip2")
