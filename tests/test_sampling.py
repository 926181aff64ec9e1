import numpy as np
import pytest

from hashkit.errors import DataError, HashkitError
from hashkit.sampling import ClassBalancedBatchSampler, sampling_groups


def assert_batches_keep_the_promise(batches, groups, batch_size, per_class):
    """Every batch: batch_size items, batch_size // per_class distinct classes, per_class each."""
    for batch in batches:
        assert len(batch) == batch_size
        classes, counts = np.unique(groups[batch], return_counts=True)
        assert len(classes) == batch_size // per_class
        assert (counts == per_class).all()
        assert (classes >= 0).all()


def test_every_batch_holds_batch_size_over_per_class_classes_of_per_class_items():
    labels = np.repeat(np.arange(20), 53)
    sampler = ClassBalancedBatchSampler(labels, batch_size=100, per_class=10, seed=0)
    batches = list(sampler)
    assert_batches_keep_the_promise(batches, labels, 100, 10)


def test_unequal_classes_still_give_distinct_classes_of_per_class_items():
    labels = np.repeat(np.arange(6), [200, 37, 33, 12, 9, 2])
    sampler = ClassBalancedBatchSampler(labels, batch_size=12, per_class=4, seed=3)
    for _ in range(3):
        assert_batches_keep_the_promise(list(sampler), labels, 12, 4)


@pytest.mark.parametrize("seed", range(8))
def test_len_is_the_number_of_batches_yielded(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 120, rng.integers(3, 12))
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    per_class = int(rng.integers(2, 6))
    batch_size = per_class * int(rng.integers(2, 4))
    sampler = ClassBalancedBatchSampler(labels, batch_size, per_class, seed=seed)
    for _ in range(2):
        batches = list(sampler)
        assert len(batches) == len(sampler) > 0
        assert_batches_keep_the_promise(batches, labels, batch_size, per_class)


def test_len_is_the_number_yielded_when_classes_divide_evenly():
    labels = np.repeat(np.arange(10), 400)  # the tuning split: 4,000 images, 10 classes
    sampler = ClassBalancedBatchSampler(labels, 100, 10, seed=0)
    assert len(sampler) == len(list(sampler)) == 40


def test_an_epoch_visits_every_item_once_or_twice():
    sizes = [53, 60, 41, 70, 66, 58, 38]  # 80 chunks of 5: 20 batches of 4 classes, none left
    labels = np.repeat(np.arange(7), sizes)
    batches = list(ClassBalancedBatchSampler(labels, batch_size=20, per_class=5, seed=1))
    visits = np.bincount(np.concatenate(batches), minlength=len(labels))
    assert visits.min() == 1 and visits.max() == 2
    # only the last chunk of a class is filled up with repeats: fewer than per_class per class
    assert (visits == 2).sum() == sum(-n % 5 for n in sizes)


def test_chunks_left_over_by_an_epoch_are_fewer_than_a_batch():
    labels = np.repeat(np.arange(7), [53, 60, 41, 70, 66, 58, 47])  # 82 chunks of 5
    batches = list(ClassBalancedBatchSampler(labels, batch_size=20, per_class=5, seed=1))
    visits = np.bincount(np.concatenate(batches), minlength=len(labels))
    assert len(batches) == 20
    assert visits.max() <= 2 and (visits == 0).sum() <= 2 * 5


def test_an_epoch_visits_every_item_exactly_once_when_classes_divide_evenly():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(5), 100))
    batches = list(ClassBalancedBatchSampler(labels, batch_size=50, per_class=10, seed=1))
    seen = np.concatenate(batches)
    assert len(np.unique(seen)) == len(seen) == 500


def test_a_dominant_class_cannot_take_two_places_in_a_batch():
    labels = np.repeat(np.arange(3), [300, 20, 20])
    sampler = ClassBalancedBatchSampler(labels, batch_size=20, per_class=10, seed=0)
    batches = list(sampler)
    assert len(batches) == 4  # each batch needs one of the 2 + 2 chunks of the small classes
    assert_batches_keep_the_promise(batches, labels, 20, 10)


def test_epochs_differ_and_seeds_repeat():
    labels = np.repeat(np.arange(4), 30)
    a = ClassBalancedBatchSampler(labels, 20, 5, seed=7)
    b = ClassBalancedBatchSampler(labels, 20, 5, seed=7)
    first, second = np.concatenate(list(a)), np.concatenate(list(a))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, np.concatenate(list(b)))


def test_a_restored_state_resumes_with_the_same_epochs():
    labels = np.repeat(np.arange(5), 40)
    run = ClassBalancedBatchSampler(labels, 20, 4, seed=2)
    list(run)
    list(run)
    state = run.state_dict()
    third = np.concatenate(list(run))
    resumed = ClassBalancedBatchSampler(labels, 20, 4, seed=2)
    resumed.load_state_dict(state)
    assert state == {"seed": 2, "epoch": 2}
    assert np.array_equal(np.concatenate(list(resumed)), third)
    with pytest.raises(HashkitError, match="seed"):
        ClassBalancedBatchSampler(labels, 20, 4, seed=3).load_state_dict(state)


def test_epoch_batches_is_a_pure_function_of_seed_and_epoch():
    labels = np.repeat(np.arange(5), 40)
    sampler = ClassBalancedBatchSampler(labels, 20, 4, seed=5)
    once = sampler.epoch_batches(3)
    list(sampler)
    assert all(np.array_equal(x, y) for x, y in zip(once, sampler.epoch_batches(3)))


def test_multi_hot_items_are_sampled_under_their_rarest_label():
    labels = np.array(
        [[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0], [0, 0, 1], [1, 0, 1]], dtype=np.uint8
    )
    # frequencies: 4, 2, 3
    assert sampling_groups(labels).tolist() == [1, 0, 1, -1, 2, 2]


def test_multi_hot_batches_hold_per_class_items_sharing_each_label():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 6)) < 0.3).astype(np.uint8)
    groups = sampling_groups(labels)
    sampler = ClassBalancedBatchSampler(labels, 15, 5, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert_batches_keep_the_promise(batches, groups, 15, 5)
    for batch in batches:
        for c in np.unique(groups[batch]):
            assert labels[batch[groups[batch] == c], c].all()
    seen = np.unique(np.concatenate(batches))
    assert set(seen) <= set(np.flatnonzero(labels.any(axis=1)))


def test_fewer_classes_than_a_batch_needs_is_a_data_error():
    labels = np.repeat(np.arange(3), 50)
    with pytest.raises(DataError, match="needs 4 classes .* has 3"):
        ClassBalancedBatchSampler(labels, 40, 10)
    # a class of one image has no positive pair and does not count
    with pytest.raises(DataError, match="has 2"):
        ClassBalancedBatchSampler(np.array([0, 0, 1, 1, 2]), 6, 2)


@pytest.mark.parametrize(
    "batch_size,per_class,message",
    [(25, 10, "multiple"), (10, 10, "two classes"), (20, 1, ">= 2"), (20.0, 5, "integer")],
)
def test_batches_that_cannot_hold_a_triplet_are_refused(batch_size, per_class, message):
    with pytest.raises(HashkitError, match=message):
        ClassBalancedBatchSampler(np.repeat(np.arange(5), 20), batch_size, per_class)


def test_a_negative_seed_is_refused():
    with pytest.raises(HashkitError, match="seed"):
        ClassBalancedBatchSampler(np.repeat(np.arange(5), 20), 20, 5, seed=-1)
