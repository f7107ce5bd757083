"""Errors lucid raises on purpose: each carries a message a user can act on."""


class LucidError(Exception):
    """Base of lucid's own errors."""


class ModelLoadError(LucidError):
    """A model file or folder cannot be used: the message names the file and what is wrong."""


class SamplingParamsError(LucidError, ValueError):
    """A sampling parameter is out of range. `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthError(LucidError, ValueError):
    """Prompt plus requested output does not fit the model's context."""


class EngineDeadError(LucidError):
    """The engine loop has stopped; no request can be served."""


class QueueFullError(LucidError):
    """The waiting queue is full; the client should retry later."""


class PoolBusyError(LucidError):
    """The KV pool has no room for a glass-box probe right now (the server answers 503)."""
