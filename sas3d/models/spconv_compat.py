"""Make spconv 2.3.x usable (and correct) for CPU training.

spconv's backward (and a few hash ops) ask ``torch.cuda.current_stream()`` for a stream
handle even for CPU tensors, which raises on a CPU-only torch. On CPU the C++ kernels ignore
the stream, so handing them 0 is what they would get on the default stream anyway.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Iterator

_PATCHED_MODULES = ("spconv.pytorch.cppcore", "spconv.pytorch.ops", "spconv.pytorch.hash")


def _null_stream() -> int:
    return 0


def ensure_spconv_cpu_backward() -> bool:
    """Patch ``get_current_stream`` in spconv's modules when CUDA is unavailable.

    Idempotent; returns True when the patch is (now) in place, False when CUDA is available
    and nothing needed changing.
    """
    import torch

    if torch.cuda.is_available():
        return False
    for name in _PATCHED_MODULES:
        module = importlib.import_module(name)
        # each module imported the function by name, so each binding is replaced
        if getattr(module, "get_current_stream", None) is not _null_stream:
            module.get_current_stream = _null_stream
    return True


@contextlib.contextmanager
def cpu_single_thread(enabled: bool = True) -> Iterator[None]:
    """Run torch (and so spconv's CPU kernels) on one thread inside the block.

    spconv 2.3.8's CPU convolution occasionally returns wrong values (up to ~10% of the
    activation scale, run to run) when torch uses more than one thread; with one thread it is
    deterministic. Wrap CPU forward *and* backward of sparse models in this.
    """
    import torch

    if not enabled or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
