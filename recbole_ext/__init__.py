"""recbole-ext: generative, reasoning-based sequential recommenders as RecBole plugins.

Importing the package restores numpy's removed aliases (cheap); the other RecBole compatibility
fixes run when RecBole is first needed (:func:`recbole_ext.compat.apply`).
"""

from recbole_ext import compat as _compat

__version__ = "0.1.0"

_compat.patch_numpy_aliases()
