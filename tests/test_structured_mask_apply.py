"""The two ways the batch's packed grammar mask reaches the logits give the same -inf pattern."""

from __future__ import annotations

import types

import torch

from lucid.structured.decoder import StructuredDecoder


def test_compiled_kernel_and_unpacked_fallback_mask_the_same_logits():
    vocab = 1000                                                    # not a multiple of 32: a partial last word
    decoder = StructuredDecoder(types.SimpleNamespace(vocab_size=vocab), eos_ids=[0])
    gen = torch.Generator().manual_seed(0)
    bitmask = torch.randint(-2**31, 2**31 - 1, (3, (vocab + 31) // 32), dtype=torch.int32, generator=gen)
    logits = torch.randn(3, vocab, generator=gen)
    compiled, unpacked = logits.clone(), logits.clone()
    decoder._apply(compiled, bitmask)
    decoder._compiled_ok = False
    decoder._apply(unpacked, bitmask)
    assert torch.equal(compiled, unpacked)
    bits = torch.tensor([(int(bitmask[r, t // 32]) >> (t % 32)) & 1 for r in range(3) for t in range(vocab)])
    assert torch.equal(torch.isinf(unpacked).flatten(), bits == 0)  # -inf exactly where the bit is 0
    assert torch.equal(unpacked[bits.view(3, vocab) == 1], logits[bits.view(3, vocab) == 1])
