"""Make spconv 2.3.x usable, correct and multi-threaded for CPU training.

Two problems of spconv's CPU path, both fixed by :func:`ensure_spconv_cpu_backward`:

1. Its backward (and a few hash ops) ask ``torch.cuda.current_stream()`` for a stream handle even
   for CPU tensors, which raises on a CPU-only torch. On CPU the C++ kernels ignore the stream, so
   handing them 0 is what they would get on the default stream anyway.
2. Its CPU convolution is gather -> ``torch.mm`` -> ``SpconvOps.scatter_add_cpu`` per kernel offset
   (``spconv/pytorch/ops.py``, ``indice_conv`` / ``indice_conv_backward``). ``scatter_add_cpu``
   races when torch runs more than one intra-op thread: with 2 threads a MinkUNet forward differed
   from the 1-thread result by up to 10-25 % of the activation scale, differently on every run
   (measured; ``tests/test_models.py::test_spconv_cpu_is_race_free_with_threads``). Replacing only
   that op by torch's ``index_add_`` (same arithmetic: add each gathered row into its output row)
   makes the multi-threaded result deterministic and equal to the 1-thread one up to float rounding
   of the threaded matrix products; replacing the gather instead does not help. So CPU training
   can use every core. With one intra-op thread there is no race, and spconv's own kernel is about
   2-4x faster than ``index_add_`` (``benchmarks/distill.py`` profile), so the replacement hands
   those calls back to it: the trainer's ranks run one thread each.

spconv is an optional dependency: ``pip install sas3d[cpu]`` installs the CPU build, ``sas3d[cu12]``
the CUDA 12 build; both provide the ``spconv`` module. :func:`import_spconv` says which to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_PATCHED_MODULES = ("spconv.pytorch.cppcore", "spconv.pytorch.ops", "spconv.pytorch.hash")
INSTALL_HINT = ("the 3D student needs spconv: `pip install sas3d[cpu]` on a CPU-only machine, "
                "`pip install sas3d[cu12]` with CUDA 12 (spconv-cu120); never both")


def spconv_distributions() -> list[str]:
    """The installed distributions that provide the ``spconv`` module (spconv, spconv-cu121, ...)."""
    from importlib import metadata

    names = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
    return sorted(n for n in names if n == "spconv" or n.startswith("spconv-cu"))


def import_spconv() -> ModuleType:
    """``spconv.pytorch``, or an ImportError saying which extra to install; warns when two spconv
    builds are installed (they overwrite each other's files, and which one loads is an accident)."""
    import warnings

    try:
        module = importlib.import_module("spconv.pytorch")
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    found = spconv_distributions()
    if len(found) > 1:
        warnings.warn(f"several spconv builds are installed ({', '.join(found)}): uninstall all but one ({INSTALL_HINT})", stacklevel=2)
    return module


def _null_stream() -> int:
    return 0


_NATIVE_SCATTER: list = []  # spconv's own scatter_add_cpu, kept when it is replaced


def _scatter_add_cpu(out, buffer, indices) -> None:
    """Race-free replacement of ``SpconvOps.scatter_add_cpu(out, buffer, indices)``:
    ``out[indices[i]] += buffer[i]`` for the first ``len(indices)`` rows of ``buffer``. On one
    thread spconv's kernel (no race there, each output row gets its additions in the same order)."""
    import torch

    if _NATIVE_SCATTER and torch.get_num_threads() == 1:
        _NATIVE_SCATTER[0](out, buffer, indices)
        return
    index = torch.from_numpy(indices.numpy_view()).long()
    target = torch.from_numpy(out.numpy_view())
    rows = torch.from_numpy(buffer.numpy_view())[: index.shape[0]]
    target.index_add_(0, index, rows)


def ensure_spconv_cpu_backward() -> bool:
    """Install both CPU fixes (idempotent). Returns True when the stream patch is in place, False when
    CUDA is available (the stream patch is then not needed; the race-free scatter is installed anyway
    because CPU tensors may still be used)."""
    import torch

    spconv_ops = importlib.import_module("spconv.pytorch.ops")
    if spconv_ops.SpconvOps.scatter_add_cpu is not _scatter_add_cpu:
        if not _NATIVE_SCATTER:
            _NATIVE_SCATTER.append(spconv_ops.SpconvOps.scatter_add_cpu)
        spconv_ops.SpconvOps.scatter_add_cpu = staticmethod(_scatter_add_cpu)
    if torch.cuda.is_available():
        return False
    for name in _PATCHED_MODULES:
        module = importlib.import_module(name)
        # each module imported the function by name, so each binding is replaced
        if getattr(module, "get_current_stream", None) is not _null_stream:
            module.get_current_stream = _null_stream
    return True
