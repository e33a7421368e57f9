"""RecBole 1.2.1 on today's stack: every compatibility fix in one place.

Import this module (``recbole_ext`` does it for you) before RecBole. :func:`apply` is idempotent;
each fix is a small function with its own test in ``tests/test_compat.py``.

Fixes, and why:

* **numpy 2 aliases** -- ``Config.compatibility_settings`` reads ``np.float_``, ``np.complex_`` and
  ``np.unicode_``, which numpy 2 removed: every ``Config()`` raises ``AttributeError``. We restore
  the three aliases to the types they always meant.
* **torch.load(weights_only=True)** -- since torch 2.6, ``torch.load`` refuses to unpickle anything
  but tensors and a few containers. RecBole's checkpoints pickle the whole ``Config`` (enums,
  ``torch.device``, ...) with pickle protocol 4, whose framing the weights-only unpickler does not
  read at all, so the final test evaluation fails. :func:`trust_own_checkpoints` relaxes the check
  only for files this process wrote itself (and that are unchanged since); every other
  ``torch.load`` keeps torch's protection.
* **ray** -- recbole pins ray 2.6.3, which does not import on numpy 2 / setuptools >= 81, and
  ``recbole.quick_start`` imports ``ray.tune`` at module level, only for hyper-parameter tuning.
  When ray cannot be imported, ``ray.tune`` resolves to a stand-in: ``tune.report`` (which
  ``objective_function`` calls after every trial, so RecBole's ``run_hyper`` with hyperopt and
  RecBole's own tests need it) does nothing, as there is no ray session to report to; any other
  use raises a clear ``ImportError``. ``recbole.quick_start`` imports and works for everything else.
* **anomaly detection** -- importing ``recbole.model.sequential_recommender`` runs
  ``torch.autograd.set_detect_anomaly(True)`` (sine.py) for the whole process: ~25 % slower
  training, identical metrics. :func:`import_recbole_models` imports the models and switches it off.
* **pandas 3** -- breaks token_seq features (``Series.agg(len)``) and copy-on-write silently
  disables RecBole's in-place ``fillna``. ``setup.cfg`` pins ``pandas<3``; :func:`check_pandas`
  fails loudly if a newer one is installed anyway.

* **known warnings** -- every run printed two warnings about RecBole's code, not the user's:
  RecBole's trainer builds ``torch.cuda.amp.GradScaler`` (a FutureWarning since torch 2.4; the
  same scaler as ``torch.amp.GradScaler("cuda")``) and its dataset fills NaNs with
  ``fillna(inplace=True)`` on a column (pandas 2 warns that this stops working under pandas 3's
  copy-on-write, which :func:`check_pandas` refuses). :func:`silence_known_warnings` ignores
  exactly these two messages when RecBole's modules trigger them; every other warning stays.

Flush-denormal is left as torch sets it (on for CPU training: epochs measured 74 s vs 152 s).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import types

logger = logging.getLogger(__name__)

_APPLIED = False

NUMPY_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}


def patch_numpy_aliases() -> None:
    """Restore the numpy 1 aliases that RecBole's ``Config`` reads (numpy 2 removed them)."""
    import numpy as np

    for alias, target in NUMPY_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, getattr(np, target))


class _MissingRayTune(types.ModuleType):
    """Stand-in for ``ray.tune`` when ray cannot be imported; any use raises the original error."""

    def __init__(self, error: BaseException):
        super().__init__("ray.tune")
        self._error = error

    @staticmethod
    def report(*args, **kwargs) -> None:
        """No-op: without ray there is no tuning session to report a trial's metrics to."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"ray.tune.{name} is unavailable: ray could not be imported ({self._error!r}). "
            "RecBole needs ray only for hyper-parameter tuning (recbole.quick_start.objective_function); "
            "recbole-ext does not use it. Install a ray that works with your numpy to tune with RecBole."
        )


def patch_ray() -> bool:
    """Make ``import recbole.quick_start`` work when ray is broken. Returns True if patched."""
    if "ray.tune" in sys.modules:
        return False
    try:
        importlib.import_module("ray.tune")
        return False
    except Exception as error:  # ray 2.6.3 fails with ModuleNotFoundError/AttributeError
        for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
            del sys.modules[name]  # drop the half-imported package
        ray = types.ModuleType("ray")
        ray.__path__ = []  # a package, so "from ray import tune" resolves the submodule
        ray.tune = _MissingRayTune(error)
        sys.modules["ray"] = ray
        sys.modules["ray.tune"] = ray.tune
        logger.debug("ray unavailable (%r); installed a ray.tune stand-in", error)
        return True


_OWN_FILES: dict[str, tuple[int, int]] = {}  # realpath -> (mtime_ns, size) as this process wrote it


def _path_of(f: object) -> str | None:
    return os.path.realpath(f) if isinstance(f, (str, os.PathLike)) else None


def trust_own_checkpoints() -> None:
    """Let ``torch.load`` read back, unrestricted, the files this process itself wrote.

    RecBole saves checkpoints with pickle protocol 4 and the whole ``Config`` inside, which the
    ``weights_only`` unpickler rejects. ``torch.save`` is wrapped to remember (path, mtime, size) of
    each file it writes; ``torch.load`` passes ``weights_only=False`` only for such a file, unchanged
    since, and only when the caller did not choose ``weights_only`` itself. Every other file keeps
    torch's protection.
    """
    import torch

    if getattr(torch.load, "_recbole_ext_wrapped", False):
        return
    original_save, original_load = torch.save, torch.load

    @functools.wraps(original_save)
    def save(obj, f, *args, **kwargs):
        result = original_save(obj, f, *args, **kwargs)
        path = _path_of(f)
        if path is not None:
            stat = os.stat(path)
            _OWN_FILES[path] = (stat.st_mtime_ns, stat.st_size)
        return result

    @functools.wraps(original_load)
    def load(f, *args, **kwargs):
        path = _path_of(f)
        if "weights_only" not in kwargs and path is not None and path in _OWN_FILES:
            stat = os.stat(path)
            if _OWN_FILES[path] == (stat.st_mtime_ns, stat.st_size):
                kwargs["weights_only"] = False
        return original_load(f, *args, **kwargs)

    load._recbole_ext_wrapped = True
    torch.save, torch.load = save, load


def import_recbole_models() -> None:
    """Import RecBole's model packages, then undo sine.py's process-wide anomaly detection."""
    import torch

    importlib.import_module("recbole.model.sequential_recommender")
    torch.autograd.set_detect_anomaly(False)


#: (message regex, category) of the warnings RecBole's own code triggers on every run (see above).
KNOWN_WARNINGS = (
    (r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", FutureWarning),
    (r"A value is trying to be set on a copy of a DataFrame or Series through chained assignment", FutureWarning),
)


def silence_known_warnings() -> None:
    """Ignore :data:`KNOWN_WARNINGS` when raised on behalf of RecBole's modules."""
    import warnings

    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=r"recbole\.")


def check_pandas() -> None:
    """RecBole 1.2.1 silently mis-loads data under pandas 3 (see module docstring)."""
    import pandas as pd

    major = int(pd.__version__.split(".")[0])
    if major >= 3:
        raise RuntimeError(
            f"pandas {pd.__version__} is installed, but RecBole 1.2.1 needs pandas < 3 "
            "(token_seq features and in-place fillna break). Run: pip install 'pandas<3'"
        )


def apply() -> None:
    """Apply every fix once. Safe to call many times."""
    global _APPLIED
    if _APPLIED:
        return
    patch_numpy_aliases()
    check_pandas()
    silence_known_warnings()
    patch_ray()
    trust_own_checkpoints()
    import_recbole_models()
    _APPLIED = True
