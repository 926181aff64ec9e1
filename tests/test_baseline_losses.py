"""The baselines' losses: each on a small case computed by hand from its paper's formula, and
the direction of its gradient (similar items pulled together, dissimilar ones pushed apart,
outputs pulled to their class's target)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hashkit.config import METHODS, TrainConfig
from hashkit.errors import HashkitError
from hashkit.losses import (
    CSQLoss,
    DPSHLoss,
    DSHLoss,
    DTSHLoss,
    GreedyHashLoss,
    HashNetLoss,
    OrthoHashLoss,
    SignStraightThrough,
)
from hashkit.losses.centres import hash_centres, sylvester_hadamard
from hashkit.methods import count_classes, get_method, make_method_loss
from hashkit.models import CodeHead

# Two items of class 0 with equal codes and one of class 1 orthogonal to them.
U = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
LABELS = torch.tensor([0, 0, 1])


def test_dpsh_is_the_pairwise_negative_log_likelihood():
    # theta = u_i.u_j / 2: 1 for the similar pair (0, 1), 0 for the four dissimilar ordered
    # pairs; the nll is log(1 + e^theta) - s theta; codes equal the outputs, so no penalty.
    expected = (2 * (math.log(1 + math.e) - 1) + 4 * math.log(2)) / 6
    assert DPSHLoss(eta=0.1)(U, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_dpsh_quantisation_term_is_eta_times_the_mean_squared_gap_to_the_signs():
    u = torch.tensor([[0.5, -2.0]])  # one item: no pair; b = (1, -1); gaps 0.5 and 1
    assert DPSHLoss(eta=0.1)(u, torch.tensor([0])).item() == pytest.approx(0.1 * 0.625)


def test_dsh_is_the_contrastive_loss_with_margin_two_bits_and_its_regulariser():
    b = torch.tensor([[0.5, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # m = 4. Pair (0,1) similar: d = 0.25 -> 0.125; (0,2) dissimilar: d = 1.25 ->
    # (4 - 1.25) / 2 = 1.375; (1,2) dissimilar: d = 2 -> 1. || |b| - 1 ||_1 per item: 1.5,
    # 1, 1, so the regulariser adds alpha (2.5 + 2.5 + 2) over the three pairs.
    expected = (0.125 + 1.375 + 1.0 + 0.01 * 7) / 3
    assert DSHLoss()(b, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_hashnet_is_the_weighted_likelihood_of_tanh_outputs():
    t = math.tanh(1.0)  # beta = 1 at the first iteration
    # theta = a h_i.h_j with a = 1: 2 t^2 for the similar pair, 0 for the dissimilar ones.
    # Weights |S|/|S1| = 3 and |S|/|S0| = 1.5 make the loss the sum of the two means.
    expected = (math.log1p(math.exp(2 * t * t)) - 2 * t * t) + math.log(2)
    assert HashNetLoss(bits=2, a=1.0)(U, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_hashnet_default_scale_is_ten_over_bits():
    assert HashNetLoss(bits=32).a == pytest.approx(10 / 32)


def test_hashnet_beta_follows_the_continuation_schedule_in_training_only():
    loss = HashNetLoss(bits=2)
    for iteration, beta in ((0, 1.0), (199, 1.0), (200, math.sqrt(2)), (400, math.sqrt(3))):
        loss.iteration = iteration
        assert loss.beta == pytest.approx(beta)
    loss.iteration = 0
    z = torch.zeros(3, 2, requires_grad=True)
    loss(z, LABELS)
    assert loss.iteration == 1
    loss.eval()
    loss(z, LABELS)
    with torch.no_grad():
        loss.train()(z, LABELS)
    assert loss.iteration == 1


def test_dtsh_is_the_triplet_negative_log_likelihood():
    # Triplets (0,1,2) and (1,0,2): theta = (2 - 0) / 2 = 1. Margin 0: -log sigmoid(1);
    # margin bits/2 = 1: -log sigmoid(0) = log 2. Codes equal the outputs: no penalty.
    assert DTSHLoss(margin_fraction=0.0)(U, LABELS).item() == pytest.approx(
        math.log1p(math.exp(-1.0)), rel=1e-6
    )
    assert DTSHLoss()(U, LABELS).item() == pytest.approx(math.log(2), rel=1e-6)


def test_greedyhash_classifies_the_signs_and_penalises_the_cubed_gap():
    loss = GreedyHashLoss(bits=2, num_classes=2, alpha=0.1)
    with torch.no_grad():
        loss.classifier.weight.copy_(torch.eye(2))
    h = torch.tensor([[0.5, -2.0]], requires_grad=True)
    # b = (1, -1), logits (1, -1), class 1: -log softmax = log(1 + e^2); penalty
    # mean(|0.5 - 1|^3, |2 - 1|^3) = 0.5625.
    value = loss(h, torch.tensor([1]))
    assert value.item() == pytest.approx(math.log1p(math.exp(2.0)) + 0.1 * 0.5625, rel=1e-6)
    value.backward()
    # Straight through: dL/dh = W^T (softmax - onehot) + the penalty's own gradient.
    p = torch.softmax(torch.tensor([1.0, -1.0]), 0)
    ce_grad = p - torch.tensor([0.0, 1.0])
    penalty_grad = 0.1 * torch.tensor([3 * 0.25 * -1, 3 * 1.0 * -1]) / 2
    assert torch.allclose(h.grad[0], ce_grad + penalty_grad, atol=1e-6)


def test_sign_straight_through_is_sgn_forward_identity_backward():
    h = torch.tensor([-0.3, 0.0, 2.0], requires_grad=True)
    b = SignStraightThrough.apply(h)
    assert b.tolist() == [-1.0, -1.0, 1.0]  # sgn(0) = -1, as in hashkit's codes
    (b * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert h.grad.tolist() == [1.0, 2.0, 3.0]


def test_csq_is_the_bce_to_the_hadamard_centre_plus_log_cosh():
    loss = CSQLoss(bits=4, num_classes=2, lambda_=1.0)
    assert loss.centres.tolist() == [[1, 1, 1, 1], [1, -1, 1, -1]]
    h = torch.full((1, 4), 0.5)
    # target 1 on every bit, p = 0.75: BCE -log 0.75; log cosh(|0.5| - 1) per bit
    expected = -math.log(0.75) + math.log(math.cosh(0.5))
    assert loss(h, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_csq_multi_label_centre_is_the_sign_of_the_sum_ties_broken_by_one_code():
    loss = CSQLoss(bits=4, num_classes=3)
    both = loss.targets(torch.tensor([[1, 1, 0]]))[0]
    # centres (1,1,1,1) and (1,-1,1,-1) sum to (2,0,2,0): ties at bits 1 and 3
    assert both[0] == 1 and both[2] == 1
    assert both[1] == loss.tie_break[1] and both[3] == loss.tie_break[3]


def test_orthohash_is_the_cosine_margin_cross_entropy():
    loss = OrthoHashLoss(bits=4, num_classes=2, codebook="hadamard")
    v = torch.ones(1, 4)  # cos 1 with c_0 = (1,1,1,1), 0 with c_1 = (1,-1,1,-1)
    # class 0: logits 8 (1 - 0.2) = 6.4 and 0; class 1: 8 and 8 (0 - 0.2) = -1.6
    value = {c: loss(v, torch.tensor([c])).item() for c in (0, 1)}
    assert value[0] == pytest.approx(math.log1p(math.exp(-6.4)), rel=1e-4)
    assert value[1] == pytest.approx(math.log1p(math.exp(9.6)), rel=1e-6)


def test_orthohash_multi_label_targets_are_smoothed_over_the_labels():
    loss = OrthoHashLoss(bits=4, num_classes=2, codebook="hadamard")
    v = torch.ones(1, 4)
    logits = loss.logits(v, torch.tensor([[1, 1]]))  # margin on both positives
    expected = -0.5 * torch.log_softmax(logits, 1).sum()
    assert loss(v, torch.tensor([[1, 1]])).item() == pytest.approx(expected.item())


def test_hadamard_centres_are_orthogonal_rows_then_their_negations():
    h = sylvester_hadamard(8)
    assert np.array_equal(h @ h.T, 8 * np.eye(8))
    c = hash_centres(10, 8, "hadamard")
    assert np.array_equal(c[8:], -c[:2])


def test_auto_centres_fall_back_to_bernoulli_and_keep_classes_apart():
    c = hash_centres(10, 12, "auto", seed=3)
    assert c.shape == (10, 12) and set(np.unique(c)) == {-1.0, 1.0}
    distances = (12 - c @ c.T) / 2
    assert distances[~np.eye(10, dtype=bool)].min() > 0
    assert np.array_equal(c, hash_centres(10, 12, "auto", seed=3))  # seeded
    assert np.array_equal(hash_centres(4, 32, "auto"), hash_centres(4, 32, "hadamard"))


def test_hadamard_centres_that_cannot_exist_are_refused():
    with pytest.raises(HashkitError, match="power of two"):
        hash_centres(3, 12, "hadamard")
    with pytest.raises(HashkitError, match="unknown centre kind"):
        hash_centres(3, 16, "orthogonal")


def _step_towards(loss_fn, u, labels, lr=0.05):
    """One gradient-descent step of ``loss_fn`` on the outputs ``u``; the new outputs."""
    u = u.clone().requires_grad_()
    loss_fn(u, labels).backward()
    return (u - lr * u.grad).detach()


PAIR_U = torch.tensor([[0.9, 0.2, -0.3], [0.1, 0.8, 0.5]])


@pytest.mark.parametrize("loss_fn", [DPSHLoss(), DSHLoss(), HashNetLoss(bits=3)], ids=str)
@pytest.mark.parametrize("same_class", [True, False])
def test_pairwise_gradient_pulls_similar_pairs_together_and_pushes_dissimilar_apart(
    loss_fn, same_class
):
    labels = torch.tensor([0, 0 if same_class else 1])
    before = F.cosine_similarity(PAIR_U[0], PAIR_U[1], dim=0)
    after_u = _step_towards(loss_fn, PAIR_U, labels)
    after = F.cosine_similarity(after_u[0], after_u[1], dim=0)
    assert (after > before) if same_class else (after < before)


def test_dtsh_gradient_raises_each_triplets_theta():
    u = torch.tensor([[0.9, 0.2, -0.3], [0.1, 0.8, 0.5], [0.4, 0.6, -0.2]])
    labels = torch.tensor([0, 0, 1])  # triplets (0, 1, 2) and (1, 0, 2)
    after = _step_towards(DTSHLoss(), u, labels)

    def theta(x, q, p, n):  # u_q.u_p / 2 - u_q.u_n / 2: the positive's lead over the negative
        return 0.5 * (x[q] @ x[p] - x[q] @ x[n])

    assert theta(after, 0, 1, 2) > theta(u, 0, 1, 2)
    assert theta(after, 1, 0, 2) > theta(u, 1, 0, 2)


@pytest.mark.parametrize("method", ["csq", "orthohash"])
def test_centre_methods_pull_outputs_towards_their_class_target(method):
    torch.manual_seed(0)
    loss_fn = make_method_loss(TrainConfig(bits=8, method=method), np.arange(3))
    targets = loss_fn.centres if method == "csq" else loss_fn.codebook
    u = torch.rand(3, 8) * 1.6 - 0.8
    labels = torch.tensor([0, 1, 2])
    after = _step_towards(loss_fn, u, labels, lr=0.1)
    before_cos = F.cosine_similarity(u, targets[labels], dim=1)
    after_cos = F.cosine_similarity(after, targets[labels], dim=1)
    assert (after_cos > before_cos).all()


def test_greedyhash_gradient_raises_the_score_of_the_true_class():
    torch.manual_seed(0)
    loss_fn = GreedyHashLoss(bits=8, num_classes=3, alpha=0.0)
    u = torch.randn(3, 8)
    labels = torch.tensor([0, 1, 2])
    after = _step_towards(loss_fn, u, labels, lr=0.5)

    def true_score(x):  # the classifier's margin on the relaxed outputs
        logits = loss_fn.classifier(x)
        return (logits.gather(1, labels[:, None]) - logits.logsumexp(1, keepdim=True)).sum()

    assert true_score(after) > true_score(u)


@pytest.mark.parametrize("method", METHODS)
def test_training_steps_through_the_head_separate_the_classes(method):
    """A few steps of every method's loss through its head, on free outputs: the mean cosine
    of same-class pairs minus that of other-class pairs grows."""
    torch.manual_seed(1)
    config = TrainConfig(bits=16, method=method)
    labels = torch.arange(12) % 3
    head = CodeHead(get_method(method).head, 16)
    loss_fn = make_method_loss(config, labels.numpy())
    raw = torch.randn(12, 16, requires_grad=True)
    # Adam: the losses' gradients differ in scale by orders of magnitude (per pair, per bit)
    optimiser = torch.optim.Adam([raw, *head.parameters(), *loss_fn.parameters()], lr=0.05)
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(12, dtype=torch.bool)
    other = labels[:, None] != labels[None, :]

    def gap() -> float:
        h = F.normalize(raw.detach(), dim=1)
        cos = h @ h.T
        return (cos[same].mean() - cos[other].mean()).item()

    before = gap()
    for _ in range(30):
        optimiser.zero_grad()
        loss_fn(head(raw), labels).backward()
        optimiser.step()
    assert gap() > before


@pytest.mark.parametrize("method", [m for m in METHODS if m != "sdsh"])
def test_baseline_losses_accept_multi_hot_labels(method):
    labels = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    loss_fn = make_method_loss(TrainConfig(bits=8, method=method), labels.numpy())
    h = torch.randn(4, 8, requires_grad=True)
    value = loss_fn(CodeHead(get_method(method).head, 8)(h), labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(h.grad).all()


def test_count_classes_of_single_and_multi_hot_labels():
    assert count_classes(np.array([0, 4, 2])) == 5
    assert count_classes(np.zeros((3, 7), dtype=np.uint8)) == 7
