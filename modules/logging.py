"""`LoggingModule` and `@log_io`: watch tensor shapes flow through the model.

Use `LoggingModule` instead of `nn.Module` and decorate a method with `@log_io`; then
`module.enable_logging()` prints, for every decorated call inside it, the shape and dtype of each
input and output, indented by call depth. `testing_modules.ipynb` uses it step by step. When logging
is off (the default) the decorator costs one attribute check.
"""

import dataclasses
import functools

import torch
from torch import nn

_depth = 0  # nesting depth of logged calls, for indentation


class LoggingModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.logging_enabled = False

    def enable_logging(self, recurse: bool = True):
        """Switch the shape printout on for this module (and, by default, every LoggingModule inside)."""
        for m in (self.modules() if recurse else [self]):
            if isinstance(m, LoggingModule):
                m.logging_enabled = True
        return self

    def disable_logging(self, recurse: bool = True):
        for m in (self.modules() if recurse else [self]):
            if isinstance(m, LoggingModule):
                m.logging_enabled = False
        return self


def describe(value) -> str:
    """A one-line summary of a value: shape and dtype for tensors, recursively for containers."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(v) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"{type(value).__name__}[{len(value)}]({inner})"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(f"{f.name}={describe(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"{type(value).__name__}({inner})"
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {describe(v)}" for k, v in list(value.items())[:4])
        return "{" + inner + (", ..." if len(value) > 4 else "") + "}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def log_io(func):
    """Print the inputs and outputs of `func` (a method of a LoggingModule) when its logging is on."""

    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        if not self.logging_enabled:
            return func(self, *args, **kwargs)
        global _depth
        pad = "    " * _depth
        print(f"{pad}>> {type(self).__name__}.{func.__name__}")
        names = func.__code__.co_varnames[1:func.__code__.co_argcount]
        for name, value in list(zip(names, args)) + list(kwargs.items()):
            if value is not None:
                print(f"{pad}   in  {name}: {describe(value)}")
        _depth += 1
        try:
            out = func(self, *args, **kwargs)
        finally:
            _depth -= 1
        print(f"{pad}   out {describe(out)}")
        return out

    return wrapper
