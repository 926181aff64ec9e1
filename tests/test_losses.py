import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from hashkit.losses import LikelihoodLoss, MarginLoss, SpringLoss, make_loss
from hashkit.triplets import similarity_matrix, triplet_differences, triplet_mask


def brute_force_triplets(labels):
    """Valid (q, p, n) by the obvious loops; labels a list of sets."""
    out = []
    n = len(labels)
    for q, p, m in itertools.product(range(n), repeat=3):
        if q != p and labels[q] & labels[p] and not labels[q] & labels[m]:
            out.append((q, p, m))
    return out


def test_spring_loss_is_zero_for_antipodal_negative():
    assert SpringLoss().formula(torch.tensor([-4.0]), 32).item() == pytest.approx(0.0, abs=1e-9)


def test_spring_loss_is_eight_when_negative_identical_and_positive_antipodal():
    assert SpringLoss(eps=1e-12).formula(torch.tensor([4.0]), 32).item() == pytest.approx(8.0)


def test_spring_loss_gradient_is_positive_inside_the_range():
    x = torch.linspace(-3.99, 3.99, 101, requires_grad=True)
    SpringLoss().formula(x, 32).sum().backward()
    assert (x.grad > 0).all()


def test_spring_loss_gradient_is_finite_at_x_equal_four():
    x = torch.tensor([4.0], requires_grad=True)
    SpringLoss().formula(x, 32).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_margin_loss_is_hinge():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.5])
    assert MarginLoss(alpha=1.0).formula(x, 8).tolist() == [0.0, 0.0, 1.0, 2.5]


def test_likelihood_loss_matches_dtsh_formula():
    torch.manual_seed(0)
    h = F.normalize(torch.randn(3, 16, dtype=torch.float64), dim=1)
    q, p, n = h
    bits, alpha = 16, 0.5
    theta = bits / 2 * (q @ p - q @ n) - bits * alpha
    expected = -theta + math.log1p(math.exp(theta))
    x = ((q - p) ** 2).sum() - ((q - n) ** 2).sum()
    got = LikelihoodLoss(alpha).formula(x.reshape(1), bits).item()
    assert got == pytest.approx(float(expected), rel=1e-9)


def test_triplet_mask_single_label_matches_loops():
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    mask = triplet_mask(labels)
    expected = brute_force_triplets([{int(v)} for v in labels])
    assert sorted(map(tuple, mask.nonzero().tolist())) == expected


def test_triplet_mask_multi_label_shares_at_least_one_label():
    multi_hot = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 0]])
    sets = [set(torch.nonzero(row).flatten().tolist()) for row in multi_hot]
    assert sorted(map(tuple, triplet_mask(multi_hot).nonzero().tolist())) == (
        brute_force_triplets(sets)
    )
    sim = similarity_matrix(multi_hot)
    assert sim[0, 2] and sim[0, 3] and not sim[0, 1]


def test_loss_is_the_mean_over_all_valid_triplets():
    torch.manual_seed(1)
    h = F.normalize(torch.randn(7, 8, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0])
    values = []
    for q, p, n in brute_force_triplets([{int(v)} for v in labels]):
        x = ((h[q] - h[p]) ** 2).sum() - ((h[q] - h[n]) ** 2).sum()
        values.append((math.sqrt(8) - torch.sqrt(4 - x + 1e-6)) ** 2)
    assert SpringLoss()(h, labels).item() == pytest.approx(torch.stack(values).mean().item())
    assert len(triplet_differences(h, labels)) == len(values)


@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([0, 1, 0, 2, 1, 0, 2, 2]),
        torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 0]]),
    ],
)
def test_triplet_differences_are_every_valid_triplet_in_q_p_n_order(labels):
    torch.manual_seed(3)
    h = F.normalize(torch.randn(len(labels), 8, dtype=torch.float64), dim=1)
    sets = [set(torch.nonzero(row).flatten().tolist()) for row in labels.reshape(len(labels), -1)]
    if labels.ndim == 1:
        sets = [{int(v)} for v in labels]
    d = (2 - 2 * h @ h.T).clamp(0, 4)
    expected = [d[q, p] - d[q, n] for q, p, n in brute_force_triplets(sets)]
    assert torch.equal(triplet_differences(h, labels), torch.stack(expected))


@pytest.mark.parametrize("name", ["spring", "margin", "likelihood"])
def test_batch_without_triplets_gives_zero_loss_and_backward_works(name):
    h = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    loss = make_loss(name)(h, torch.tensor([0, 0, 0, 0]))
    loss.backward()
    assert loss.item() == 0.0
    assert (h.grad == 0).all()


@pytest.mark.parametrize("name", ["spring", "margin", "likelihood"])
def test_a_gradient_step_pulls_positives_closer(name):
    torch.manual_seed(2)
    raw = torch.randn(12, 16, requires_grad=True)
    labels = torch.arange(12) % 3
    loss_fn = make_loss(name)
    optimiser = torch.optim.SGD([raw], lr=0.5)

    def gap():
        h = F.normalize(raw, dim=1)
        return -triplet_differences(h, labels).mean().item()

    before = gap()
    for _ in range(20):
        optimiser.zero_grad()
        loss_fn(F.normalize(raw, dim=1), labels).backward()
        optimiser.step()
    assert gap() > before
