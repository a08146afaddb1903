"""Huang & Wang 2017, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (arXiv:1707.01219).

Each channel of a conv feature map is one sample of the layer's "neuron
selectivity" distribution: its spatial response f_k (H*W values), L2-normalised.
The student's channel set is pulled towards the teacher's by the squared
maximum mean discrepancy with the polynomial kernel k(x, y) = (x^T y + c)^d::

    L_NST = 1/C_t^2 sum_{i,i'} k(t_i, t_i') + 1/C_s^2 sum_{j,j'} k(s_j, s_j')
            - 2/(C_t C_s) sum_{i,j} k(t_i, s_j)

averaged over the batch, with the paper's d = 2, c = 0. Channel counts may
differ (channels are the samples); a map of another spatial size is
average-pooled to the smaller of the two. Common weight: 50 (``weight: 50``).
"""

from __future__ import annotations

from torch import Tensor, nn

from kdistill.methods.base import StepContext
from kdistill.methods.features import FeaturePairMethod, require_conv_maps
from kdistill.registry import register_method


def _channels(feature: Tensor) -> Tensor:
    """(batch, channels, positions), each channel's spatial response L2-normalised."""
    return nn.functional.normalize(feature.float().flatten(2), dim=2)


def _mean_kernel(a: Tensor, b: Tensor, degree: int, offset: float) -> Tensor:
    """Per sample, the mean of k(a_i, b_j) over all channel pairs."""
    return (a @ b.transpose(1, 2) + offset).pow(degree).mean(dim=(1, 2))


def nst_loss(student: Tensor, teacher: Tensor, degree: int = 2, offset: float = 0.0) -> Tensor:
    """Squared MMD between the two maps' channel sets, batch mean; both (batch, C, H, W), same H, W."""
    s, t = _channels(student), _channels(teacher)
    mmd = (_mean_kernel(t, t, degree, offset) + _mean_kernel(s, s, degree, offset)
           - 2 * _mean_kernel(t, s, degree, offset))
    return mmd.mean()


@register_method("nst")
class NeuronSelectivityTransfer(FeaturePairMethod):
    def __init__(self, student_layer: str | None = None, teacher_layer: str | None = None,
                 degree: int = 2, offset: float = 0.0) -> None:
        super().__init__(student_layer, teacher_layer)
        if int(degree) != degree or degree < 1 or offset < 0:
            raise ValueError("nst: degree must be a positive integer and offset >= 0")
        self.degree, self.offset = int(degree), float(offset)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        s, t = self.features(ctx)
        require_conv_maps("neuron selectivity transfer", s, t)
        if s.shape[2:] != t.shape[2:]:
            size = min(s.shape[2:], t.shape[2:], key=lambda hw: hw[0] * hw[1])
            s = nn.functional.adaptive_avg_pool2d(s, size)
            t = nn.functional.adaptive_avg_pool2d(t, size)
        return {"nst": nst_loss(s, t, self.degree, self.offset)}
