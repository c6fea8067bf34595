"""Optimizers of the course, each a ``torch.optim.Optimizer`` subclass.

Where torch.optim has the same algorithm the class name, hyperparameter names
and defaults are torch's, and the trajectory matches torch's. Where a
reference package exists (prodigyopt, schedulefree, the Muon reference) the
names and defaults follow it.
"""

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .ekfac import EKFAC
from .entropy_sgd import EntropySGD
from .ggt import GGT
from .kfac import KFAC, KroneckerConfig
from .lion import Lion
from .modular_descent import ModularDescent
from .muon import Muon, muon_param_groups
from .nadam import NAdam
from .natural_gradient import NaturalGradient
from .newton import Newton
from .prodigy import Prodigy
from .rmsprop import RMSprop
from .schedule_free import AdamWScheduleFree, SGDScheduleFree
from .sgd import SGD
from .shampoo import Shampoo, ShampooConfig
from .sign import SignSGD, Signum
from .soap import SOAP
from .swats import SWATS

__all__ = [
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "NAdam",
    "Lion",
    "SignSGD",
    "Signum",
    "Prodigy",
    "SGDScheduleFree",
    "AdamWScheduleFree",
    "SWATS",
    "GGT",
    "EntropySGD",
    "KFAC",
    "KroneckerConfig",
    "EKFAC",
    "Shampoo",
    "ShampooConfig",
    "Muon",
    "muon_param_groups",
    "ModularDescent",
    "SOAP",
    "Newton",
    "NaturalGradient",
]
