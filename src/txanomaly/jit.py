"""Numba for the compiled kernels, without the start-up cost of a check they do not need.

The first compiled function a process loads (even from Numba's on-disk cache) makes Numba
import all its CPU lowering code; one of those modules (``numba.np.arraymath``) imports
``scipy.linalg`` on the spot, only to set a flag saying whether compiled ``np.correlate`` and
``np.convolve`` may call BLAS's dot. That import costs 0.2-0.3 s of CPU time (measured on
the 2-core machine: loading the feature kernels from the cache took 0.78-0.96 s with it,
0.57-0.75 s without), and none of our compiled code calls those functions.

:func:`prepare` imports that module with ``scipy.linalg.cython_blas`` held back (an import
of it fails for that moment, which Numba takes as "no BLAS"), then sets the flag to what
Numba's own check would have found: whether SciPy's ``linalg`` is installed. Numba's state
is then the same as after its own start-up, less the import: code compiled later that does
use BLAS imports ``scipy.linalg`` when it is compiled (Numba's ``ensure_blas``). Nothing is
done when ``scipy.linalg`` or that Numba module is imported already.

>>> prepare()
>>> import numba
>>> numba.njit(lambda x: x + 1)(1)
2
"""

from __future__ import annotations

import importlib.util
import sys
import threading

_HELD_BACK = "scipy.linalg.cython_blas"
_lock = threading.Lock()


def prepare() -> None:
    """Import Numba and its array lowering without importing ``scipy.linalg`` (see the
    module's docstring). Call it before the first compiled function is loaded."""
    import numba  # noqa: F401  (SciPy, when installed, comes with it)

    with _lock:
        if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules or (
                _HELD_BACK in sys.modules):
            return
        sys.modules[_HELD_BACK] = None  # type: ignore[assignment]  # "import fails"
        try:
            from numba.np import arraymath
        finally:
            if _HELD_BACK in sys.modules and sys.modules[_HELD_BACK] is None:
                del sys.modules[_HELD_BACK]
        # What arraymath's own check (``_check_blas``) finds: scipy.linalg can be imported.
        # Numba imports SciPy with itself when SciPy is installed.
        arraymath._HAVE_BLAS = "scipy" in sys.modules and (
            importlib.util.find_spec("scipy.linalg") is not None)


__all__ = ["prepare"]
