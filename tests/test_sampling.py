import numpy as np

from hashkit.sampling import ClassBalancedBatchSampler


def test_every_batch_has_several_items_of_each_class_it_holds():
    labels = np.repeat(np.arange(10), 53)
    sampler = ClassBalancedBatchSampler(labels, batch_size=40, per_class=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(labels) // 40
    for batch in batches:
        assert len(batch) == 40
        counts = np.bincount(labels[batch])
        assert counts[counts > 0].min() >= 2


def test_an_epoch_visits_almost_every_item_once():
    labels = np.repeat(np.arange(5), 100)
    batches = list(ClassBalancedBatchSampler(labels, batch_size=50, per_class=10, seed=1))
    seen = np.concatenate(batches)
    assert len(np.unique(seen)) == len(seen) == 500


def test_epochs_differ_and_seeds_repeat():
    labels = np.repeat(np.arange(4), 30)
    a = ClassBalancedBatchSampler(labels, 20, 5, seed=7)
    b = ClassBalancedBatchSampler(labels, 20, 5, seed=7)
    first, second = np.concatenate(list(a)), np.concatenate(list(a))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, np.concatenate(list(b)))


def test_multi_hot_labels_give_uniform_batches():
    labels = (np.random.default_rng(0).random((90, 5)) > 0.5).astype(np.uint8)
    batches = list(ClassBalancedBatchSampler(labels, 30, 5, seed=0))
    assert [len(b) for b in batches] == [30, 30, 30]
    assert len(np.unique(np.concatenate(batches))) == 90
