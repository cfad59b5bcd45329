"""scikit-learn's estimator contract without importing scikit-learn: parameters, clone, tags.

Importing ``sklearn.base`` loads SciPy's statistics and pandas (about 1.3 s on an idle 2-core
machine, as long as PyTorch itself), which ``txanomaly train`` and ``score`` never use. The
detector and the model therefore take the contract from :class:`Estimator`: ``__init__`` only
stores keyword parameters; :meth:`~Estimator.get_params` / :meth:`~Estimator.set_params` (with
``detector__map_size`` nesting), a repr of the parameters that differ from their defaults, and
``__sklearn_tags__``, which scikit-learn calls (it is loaded by then) and which builds
scikit-learn's own tags. scikit-learn's ``clone``, ``Pipeline``, ``GridSearchCV`` and
estimator checks take such objects as they are (tests/test_detector.py runs the checks);
:func:`clone` here is the same rule without the import.

>>> class Demo(Estimator):
...     def __init__(self, size=3, name="x"):
...         self.size = size
...         self.name = name
>>> Demo(size=4), clone(Demo(name="y")).get_params()
(Demo(size=4), {'name': 'y', 'size': 3})
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import numpy as np


class Estimator:
    """Base of txanomaly's estimators (see the module's docstring)."""

    #: scikit-learn's estimator type (``"outlier_detector"`` for detectors), or None.
    _estimator_type: str | None = None

    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(p.name for p in signature.parameters.values()
                      if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters (with ``deep``, nested ones as ``name__param``)."""
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> Any:
        """Set parameters (``name__param`` sets a nested estimator's); returns ``self``."""
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {self}. Valid "
                                 f"parameters are: {self._get_param_names()!r}.")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub_params in nested.items():
            valid[name].set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        defaults = {name: p.default for name, p in
                    inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{name}={value!r}" for name, value in self.get_params(deep=False).items()
                   if not _same(value, defaults.get(name, inspect.Parameter.empty))]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import Tags, TargetTags  # scikit-learn asks: it is loaded

        return Tags(estimator_type=self._estimator_type,
                    target_tags=TargetTags(required=False), transformer_tags=None,
                    regressor_tags=None, classifier_tags=None)


def clone(estimator: Any) -> Any:
    """A new, unfitted estimator with deep copies of ``estimator``'s parameters (nested
    estimators cloned), as ``sklearn.base.clone`` makes."""
    params = estimator.get_params(deep=False)
    return type(estimator)(**{
        name: clone(value) if hasattr(value, "get_params") and not isinstance(value, type)
        else copy.deepcopy(value) for name, value in params.items()})


def check_random_state(seed: Any) -> np.random.RandomState:
    """``sklearn.utils.check_random_state``: a RandomState from None, an int or itself."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, int | np.integer):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


def _same(value: Any, default: Any) -> bool:
    if value is default:
        return True
    try:
        return bool(type(value) is type(default) and value == default)
    except (TypeError, ValueError):  # arrays compare element-wise
        return False


__all__ = ["Estimator", "check_random_state", "clone"]
