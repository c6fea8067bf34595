"""Optimizers of the course, each a ``torch.optim.Optimizer`` subclass.

Where torch.optim has the same algorithm the class name, hyperparameter names
and defaults are torch's, and the trajectory matches torch's. Where a
reference package exists (prodigyopt, schedulefree, the Muon reference) the
names and defaults follow it.
"""
from .sgd import SGD
from .adagrad import Adagrad
from .rmsprop import RMSprop
from .adam import Adam, AdamW
from .nadam import NAdam
from .lion import Lion
from .sign import SignSGD, Signum
from .prodigy import Prodigy
from .schedule_free import SGDScheduleFree, AdamWScheduleFree
from .swats import SWATS
from .ggt import GGT
from .entropy_sgd import EntropySGD
from .kfac import KFAC, KroneckerConfig
from .ekfac import EKFAC
from .shampoo import Shampoo, ShampooConfig
from .muon import Muon, muon_param_groups
from .modular_descent import ModularDescent
from .soap import SOAP
from .newton import Newton
from .natural_gradient import NaturalGradient
