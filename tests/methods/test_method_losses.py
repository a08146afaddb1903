"""Each method's loss on a tiny input whose value is worked out by hand in the comments."""

import math

import pytest
import torch
from torch import nn

from kdistill.distiller import Distiller, build_method
from kdistill.errors import ConfigError
from kdistill.methods.attention import AttentionTransfer
from kdistill.methods.base import StepContext
from kdistill.methods.crd import CRD, nce_loss
from kdistill.methods.dkd import dkd_loss
from kdistill.methods.features import make_adapter
from kdistill.methods.fitnets import FitNets
from kdistill.methods.nst import NeuronSelectivityTransfer, nst_loss
from kdistill.methods.pkt import pkt_loss
from kdistill.methods.regression import RegressionKD
from kdistill.methods.rkd import RKD, pairwise_distances
from kdistill.methods.sp import sp_loss


def ctx(s_logits=None, t_logits=None, labels=None, s_feat=None, t_feat=None, indices=None, epoch=0):
    s_logits = torch.zeros(1, 2) if s_logits is None else torch.tensor(s_logits)
    return StepContext(inputs=torch.zeros(len(s_logits), 1), labels=labels if labels is not None else
                       torch.zeros(len(s_logits), dtype=torch.long), student_logits=s_logits,
                       teacher_logits=torch.tensor(t_logits) if t_logits is not None else s_logits,
                       indices=indices, epoch=epoch,
                       student_features={"s": s_feat} if s_feat is not None else {},
                       teacher_features={"t": t_feat} if t_feat is not None else {})


def test_dkd_splits_target_and_non_target_parts():
    # T=1, label 0. Student uniform: p_s = [1/3]*3, b_s = [1/3, 2/3], non-target q_s = [1/2, 1/2].
    # Teacher logits [ln2, ln3, 0]: p_t = [2, 3, 1]/6, b_t = [1/3, 2/3] = b_s -> TCKD = 0;
    # q_t = [3/4, 1/4] -> NCKD = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120
    s = torch.zeros(1, 3)
    t = torch.tensor([[math.log(2), math.log(3), 0.0]])
    tckd, nckd = dkd_loss(s, t, torch.tensor([0]), alpha=1.0, beta=8.0, temperature=1.0)
    assert tckd.item() == pytest.approx(0.0, abs=1e-6)
    assert nckd.item() == pytest.approx(8.0 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)), abs=1e-5)


def test_dkd_target_part_alone():
    # Teacher [ln2, 0, 0]: p_t = [1/2, 1/4, 1/4], b_t = [1/2, 1/2]; student uniform b_s = [1/3, 2/3]
    # TCKD = 1/2 ln(3/2) + 1/2 ln(3/4); NCKD = 0 (both non-target parts uniform); T^2 = 4 at T = 2
    # with logits doubled so z/T is unchanged.
    t = torch.tensor([[2 * math.log(2), 0.0, 0.0]])
    tckd, nckd = dkd_loss(torch.zeros(1, 3), t, torch.tensor([0]), 1.0, 8.0, temperature=2.0)
    assert tckd.item() == pytest.approx(4 * (0.5 * math.log(1.5) + 0.5 * math.log(0.75)), abs=1e-5)
    assert nckd.item() == pytest.approx(0.0, abs=1e-6)


def test_regression_mse_and_huber():
    # residuals 1 and 2: MSE = (1 + 4) / 2 = 2.5; Huber(delta=1) = (0.5 + (2 - 0.5)) / 2 = 1.0
    c = ctx([[1.0], [2.0]], [[0.0], [0.0]])
    assert RegressionKD("mse")(c)["regression"].item() == pytest.approx(2.5)
    assert RegressionKD("huber", delta=1.0)(c)["regression"].item() == pytest.approx(1.0)


def test_fitnets_hint_loss_with_identity_regressor():
    # r = identity, F_s = [1, 2], F_t = [0, 0]: 1/2 * mean(1, 4) = 1.25
    method = FitNets("s", "t")
    method.regressor = make_adapter(torch.Size([1, 2]), torch.Size([1, 2]))
    linear = method.regressor[1]
    with torch.no_grad():
        linear.weight.copy_(torch.eye(2))
        linear.bias.zero_()
    loss = method(ctx(s_feat=torch.tensor([[1.0, 2.0]]), t_feat=torch.zeros(1, 2)))["fitnets"]
    assert loss.item() == pytest.approx(1.25)


def test_attention_transfer():
    # one channel, 1x2 maps: Q_s = normalise([1, 0]) = [1, 0], Q_t = [0, 1]; mean((1)^2, (-1)^2) = 1
    s = torch.tensor([[[[1.0, 0.0]]]])
    t = torch.tensor([[[[0.0, 3.0]]]])
    assert AttentionTransfer("s", "t")(ctx(s_feat=s, t_feat=t))["at"].item() == pytest.approx(1.0)
    # channel counts may differ: the map is a channel mean
    t2 = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]]]])
    assert AttentionTransfer("s", "t")(ctx(s_feat=s, t_feat=t2))["at"].item() == pytest.approx(0.0, abs=1e-7)


def test_pkt():
    # teacher [1,0],[0,1]: K = [[1, .5], [.5, 1]] -> rows [2/3, 1/3]; student both [1,0]: rows [1/2, 1/2]
    # KL per row = 2/3 ln(4/3) + 1/3 ln(2/3)
    expected = 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)
    loss = pkt_loss(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_nst_mmd_by_hand():
    # 1x2 maps, kernel (x.y)^2. Student channels [1, 0], [0, 1]; teacher channels [3, 0], [1, 0] (both
    # [1, 0] once normalised). Mean kernels: teacher-teacher 1, student-student (1 + 0 + 0 + 1) / 4 = 1/2,
    # teacher-student 1/2. MMD^2 = 1 + 1/2 - 2 * 1/2 = 1/2.
    s = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    t = torch.tensor([[[[3.0, 0.0]], [[1.0, 0.0]]]])
    assert nst_loss(s, t).item() == pytest.approx(0.5, abs=1e-6)
    # channels are samples: a one-channel teacher [1, 0] gives the same value, identical sets give 0
    assert nst_loss(s, t[:, :1]).item() == pytest.approx(0.5, abs=1e-6)
    assert nst_loss(s, s * 2).item() == pytest.approx(0.0, abs=1e-6)
    # maps of other sizes are pooled to the smaller one: a 2x2 constant map pools to 1x1
    method = NeuronSelectivityTransfer("s", "t")
    loss = method(ctx(s_feat=torch.ones(1, 2, 2, 2), t_feat=torch.ones(1, 3, 1, 1)))["nst"]
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="conv feature maps"):
        method(ctx(s_feat=torch.ones(1, 4), t_feat=torch.ones(1, 4)))


def test_sp():
    # G_s = I; G_t = all ones -> rows / sqrt(2). ||G_s - G_t||^2 = 2 (1 - 1/sqrt2)^2 + 2 (1/2); / b^2 = 4
    expected = (2 * (1 - 1 / math.sqrt(2)) ** 2 + 1.0) / 4
    loss = sp_loss(torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_rkd_distance_by_hand_and_invariance():
    # student on a line (0,0),(1,0),(2,0): d = 1, 2, 1, mean 4/3 -> psi = .75, 1.5, .75
    # teacher (0,0),(1,0),(0,1): d = 1, 1, sqrt2, mean (2 + sqrt2)/3
    mu_t = (2 + math.sqrt(2)) / 3
    pairs = [(0.75, 1 / mu_t), (1.5, 1 / mu_t), (0.75, math.sqrt(2) / mu_t)]
    expected = 2 * sum(0.5 * (a - b) ** 2 for a, b in pairs) / 9  # all |diff| < 1: quadratic Huber part
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = RKD("s", "t", distance_weight=1.0, angle_weight=0.0)(ctx(s_feat=s, t_feat=t))
    assert loss["rkd_distance"].item() == pytest.approx(expected, abs=1e-6)
    # relations are invariant to scaling and rotation of the embedding
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    same = RKD("s", "t", 1.0, 1.0)(ctx(s_feat=3 * t @ rot, t_feat=t))
    assert same["rkd_distance"].item() == pytest.approx(0.0, abs=1e-6)
    assert same["rkd_angle"].item() == pytest.approx(0.0, abs=1e-6)
    assert RKD("s", "t", 0.0, 1.0)(ctx(s_feat=s, t_feat=t))["rkd_angle"].item() > 0.01


def test_crd_nce_loss_by_hand():
    # h_pos = 1, one negative with h = 1, N = 2, K = 1: noise = K/N = 1/2
    # L = -[ln(1 / 1.5) + ln(0.5 / 1.5)] = ln 1.5 + ln 3
    loss = nce_loss(torch.tensor([1.0]), torch.tensor([[1.0]]), num_data=2)
    assert loss.item() == pytest.approx(math.log(1.5) + math.log(3.0), abs=1e-5)


def test_crd_memory_bank_size_and_update():
    teacher, student = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2)), nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    method = CRD("0", "0", feat_dim=8, num_negatives=4096)
    distiller = Distiller(teacher=teacher, student=student, methods=[(method, 1.0)])
    distiller.setup_methods(torch.randn(2, 4), num_train=60_000)
    assert method.student_bank.shape == (60_000, 8) and method.teacher_bank.dtype == torch.float32
    assert method.k == 4096
    small = CRD("0", "0", feat_dim=8)
    Distiller(teacher=teacher, student=student, methods=[(small, 1.0)]).setup_methods(torch.randn(2, 4), num_train=10)
    assert small.k == 9  # negatives clipped to num_train - 1
    before = method.student_bank.clone()
    x = torch.randn(3, 4)
    losses = distiller(x, torch.tensor([0, 1, 0]), torch.tensor([5, 7, 9]))
    assert torch.isfinite(losses["crd"])
    changed = (method.student_bank != before).any(1).nonzero().flatten().tolist()
    assert changed == [5, 7, 9]


def test_crd_critic_scores_the_positive_and_the_drawn_negatives():
    # with Z = 1 the critic returns exp(<anchor, bank[j]> / tau) for j = the sample's own row, then
    # its K negatives; recompute every score from the drawn rows and check none is the positive
    method = CRD("0", "0", feat_dim=4, num_negatives=5, nce_temperature=0.5)
    method.k = 5
    bank = nn.functional.normalize(torch.randn(12, 4), dim=1)
    anchor = nn.functional.normalize(torch.randn(3, 4), dim=1)
    indices = torch.tensor([0, 6, 11])
    torch.manual_seed(3)
    positive, negatives = method._critic(anchor, bank, indices, torch.ones(()))
    torch.manual_seed(3)
    drawn = torch.randint(0, 11, (3, 5))
    drawn = drawn + (drawn >= indices.unsqueeze(1)).long()
    assert not (drawn == indices.unsqueeze(1)).any()
    expected_pos = torch.exp((anchor * bank[indices]).sum(1) / 0.5)
    expected_neg = torch.exp(torch.stack([bank[drawn[i]] @ anchor[i] for i in range(3)]) / 0.5)
    assert torch.allclose(positive, expected_pos, atol=1e-6)
    assert torch.allclose(negatives, expected_neg, atol=1e-6)


def test_methods_compose_as_a_weighted_sum():
    teacher, student = nn.Linear(3, 4), nn.Linear(3, 4)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    kd, dkd = build_method("kd", {}, 2.0), build_method("dkd", {}, 2.0)
    combined = Distiller(teacher=teacher, student=student, alpha=0.0, methods=[(kd, 0.5), (dkd, 2.0)])(x, y)
    expected = combined["student"] + 0.5 * combined["kd"] + 2.0 * (combined["dkd_tckd"] + combined["dkd_nckd"])
    assert combined["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_fitnets_stage1_trains_on_the_hint_alone():
    teacher, student = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2)), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    method = FitNets("0", "0", stage1_epochs=1)
    distiller = Distiller(teacher=teacher, student=student, alpha=0.5, methods=[(method, 3.0)])
    distiller.setup_methods(torch.randn(2, 3), 10)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    stage1 = distiller(x, y)
    assert stage1["loss"].item() == pytest.approx(3.0 * stage1["fitnets"].item(), rel=1e-6)
    distiller.epoch = 1
    stage2 = distiller(x, y)
    expected = 0.5 * stage2["student"] + 0.5 * stage2["kd"] + 3.0 * stage2["fitnets"]
    assert stage2["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_rkd_distances_match_the_formula_at_batch_64():
    # torch.cdist's matrix-product path (batches over 25) made self-distances non-zero and was
    # percent-level off for embeddings far from the origin; every entry must follow ||x_i - x_j||
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 16, generator=gen) * 0.1 + 5.0
    rows = x.double().tolist()
    by_hand = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(ri, rj))) for rj in rows] for ri in rows]
    mean = sum(by_hand[i][j] for i in range(64) for j in range(64) if i != j) / (64 * 63)
    expected = torch.tensor(by_hand, dtype=torch.float64) / mean
    got = pairwise_distances(x).double()
    assert torch.equal(got.diagonal(), torch.zeros(64, dtype=torch.float64))
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
    # the zero diagonal has a finite gradient
    x.requires_grad_(True)
    pairwise_distances(x).sum().backward()
    assert torch.isfinite(x.grad).all()
