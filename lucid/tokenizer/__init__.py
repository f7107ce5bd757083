"""Tokenizer (byte-level BPE), HF-compatible chat templates, and UTF-8-safe incremental detokenization."""

from lucid.tokenizer.chat_template import ChatTemplateError, render_chat_template
from lucid.tokenizer.detokenizer import IncrementalDetokenizer
from lucid.tokenizer.tokenizer import Tokenizer

__all__ = ["ChatTemplateError", "IncrementalDetokenizer", "Tokenizer", "render_chat_template"]
