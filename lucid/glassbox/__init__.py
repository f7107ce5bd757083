"""The glass box: how a prediction forms through the layers (logit lens), where a query looked (attention weights),
computed on demand for one chosen position — in the engine over its paged KV cache, or standalone for `lucid trace`.
"""
