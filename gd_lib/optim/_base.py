"""The base class of every gd_lib optimizer: ``torch.optim.Optimizer`` plus torch's checkpoint habits.

torch's own optimizers read checkpoints written by older torch versions and by other code:
a param group that lacks a flag added since (``maximize``, ``foreach``,
``decoupled_weight_decay``, ...) gets that flag's default in ``__setstate__``, which
``load_state_dict`` and unpickling both call, and a ``step`` saved as a plain number becomes
the scalar tensor the update expects. :class:`Optimizer` does the same for every gd_lib
optimizer, so a checkpoint that torch.optim can resume, gd_lib can too.
"""

from __future__ import annotations

import torch

from ._foreach import scalar_dtype

__all__ = ["Optimizer"]


class Optimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` that fills what an old or foreign checkpoint lacks.

    On ``load_state_dict`` (and unpickling) every param group gets, for each key it lacks,
    the value this optimizer was constructed with (``self.defaults``): what torch.optim's
    ``__setstate__`` does with its fixed defaults. Subclasses may set

    - ``_forced_group_values``: keys overwritten whatever the checkpoint says (AdamW keeps
      ``decoupled_weight_decay=True`` when it loads an Adam checkpoint, as torch's AdamW);
    - ``_scalar_tensor_keys``: per-parameter state kept as scalar tensors (``step``, and NAdam's
      ``mu_product``, torch's convention); a plain number saved by old torch versions is
      converted to one.
    """

    _forced_group_values: dict = {}
    _scalar_tensor_keys: tuple[str, ...] = ()

    def __getstate__(self) -> dict:
        """torch's ``defaults``, ``state`` and ``param_groups``, plus this optimizer's own attributes.

        torch.optim's optimizers keep everything in those three; gd_lib's also keep
        construction-time settings (Muon's group defaults, EntropySGD's noise generator, the
        data-parallel work sharing), which ``copy.deepcopy`` and ``pickle`` must carry too.
        torch's hook dictionaries are left out, as torch does (they may hold lambdas).
        """
        state = super().__getstate__()
        for key, value in self.__dict__.items():
            if key not in state and not key.startswith("_optimizer_") and key != "_zero_grad_profile_name":
                state[key] = value
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self._missing_group_defaults(group).items():
                group.setdefault(key, value)
            group.update(self._forced_group_values)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                for key in self._scalar_tensor_keys:
                    if key in p_state and not torch.is_tensor(p_state[key]):
                        # an old checkpoint's float step -> the scalar tensor torch.optim keeps
                        p_state[key] = torch.tensor(float(p_state[key]), dtype=scalar_dtype())

    def _missing_group_defaults(self, group: dict) -> dict:
        """The values a loaded ``group`` takes for the keys it lacks (default: ``self.defaults``)."""
        return self.defaults
