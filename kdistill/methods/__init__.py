"""Loss terms, one module each, registered by name (``method: crd``, ``terms: [{name: ce}, ...]``).

========== =============================================== =====================
name       paper                                           needs hooks
========== =============================================== =====================
ce         the labels (cross-entropy, label smoothing)     no
kd         Hinton et al. 2015                              no
dkd        Zhao et al. 2022 (decoupled KD)                 no
regression MSE / Huber to the teacher's outputs            no
fitnets    Romero et al. 2015 (hints + regressor)          yes
at         Zagoruyko & Komodakis 2017 (attention transfer) yes (conv maps)
nst        Huang & Wang 2017 (neuron selectivity, MMD)     yes (conv maps)
pkt        Passalis & Tefas 2018                           yes
rkd        Park et al. 2019 (distance + angle)             yes
sp         Tung & Mori 2019 (similarity-preserving)        yes
crd        Tian et al. 2020 (contrastive, memory bank)     yes
========== =============================================== =====================

For dense detectors, :mod:`kdistill.detection.methods` registers ``crosskd``
(Wang et al. 2023, cross-head), ``pred-mimic`` (prediction mimicking) and
``feat-imitation`` (FitNets-style hints on the FPN maps).

For transformers, ``hidden-states`` (hidden-state matching through a learned
projection) and ``attention-maps`` (attention-probability matching, TinyBERT,
Jiao et al. 2020) take a teacher-to-student layer map. ``variational`` (Hegde
et al. 2019), the KL term of a variational student (``student.variational``,
added automatically for such a student), registers from
:mod:`kdistill.methods.variational`, which this package does not import: it
belongs to the variational student (:mod:`kdistill.compress.variational`).
Both optional parts are imported by the registry on its first lookup
(:data:`kdistill.registry.BUILTIN_PACKAGES`).
"""

from kdistill.methods import (  # noqa: F401  (registers the methods)
    attention,
    attention_maps,
    ce,
    crd,
    dkd,
    fitnets,
    hidden_states,
    kd,
    nst,
    pkt,
    regression,
    rkd,
    sp,
)
from kdistill.methods.base import DistillationMethod, StepContext, soft_kl
from kdistill.methods.ce import LabelLoss
from kdistill.methods.features import FeaturePairMethod, default_feature_layer, make_adapter
from kdistill.methods.hooks import FeatureHooks, module_paths, resolve_module
from kdistill.methods.kd import HintonKD

__all__ = [
    "DistillationMethod",
    "FeatureHooks",
    "FeaturePairMethod",
    "HintonKD",
    "LabelLoss",
    "StepContext",
    "default_feature_layer",
    "make_adapter",
    "module_paths",
    "resolve_module",
    "soft_kl",
]
