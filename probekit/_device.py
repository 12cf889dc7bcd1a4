"""The one device choice and the one thread policy of probe training.

* :func:`resolve_device`: ``None``/``"auto"`` means CUDA when torch sees a GPU, else the CPU; a CUDA device asked
  for on a machine without one is a one-line :class:`~probekit.errors.ConfigError`.
* :func:`torch_threads` and :func:`small_problem_threads`: probe fits on the CPU run on one torch thread while the
  problem is small (L-BFGS issues many small tensor ops, for which thread synchronisation costs more than it saves)
  and on torch's own thread count from :data:`SMALL_PROBLEM_ELEMENTS` elements on. docs/design.md ("Threads of
  probe fits") has the measurements behind the threshold.
"""
from __future__ import annotations

from contextlib import contextmanager

from probekit.errors import ConfigError

#: Problems (layers x items x d_model) below this many elements are fitted on one CPU thread.
SMALL_PROBLEM_ELEMENTS = 8_000_000


def resolve_device(device: str | None) -> str:
    """The torch device to train on: ``device`` as given, or CUDA when available (``None`` or ``"auto"``)."""
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was asked for but CUDA is not available; use device='cpu' or None.")
    return str(device)


@contextmanager
def torch_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (None = leave it)."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def small_problem_threads(n_elements: int, device: str) -> int | None:
    """1 for a CPU problem of fewer than :data:`SMALL_PROBLEM_ELEMENTS` elements, else None (leave torch's count)."""
    return 1 if device == "cpu" and n_elements < SMALL_PROBLEM_ELEMENTS else None


def probe_threads(n_elements: int, device: str):
    """The thread policy of one probe fit, as a context: :func:`torch_threads` of :func:`small_problem_threads`."""
    return torch_threads(small_problem_threads(n_elements, device))
