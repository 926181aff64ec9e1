import numpy as np
import pytest

from hashkit.codes import code_statistics, hamming_distances, pack_codes, sign_codes, unpack_codes
from hashkit.errors import HashkitError


@pytest.mark.parametrize("bits", [12, 32, 64])
def test_hamming_distance_of_packed_codes_equals_unpacked_count(bits):
    rng = np.random.default_rng(bits)
    a = rng.random((20, bits)) > 0.5
    b = rng.random((30, bits)) > 0.5
    expected = (a[:, None, :] != b[None, :, :]).sum(axis=2)
    assert np.array_equal(hamming_distances(pack_codes(a), pack_codes(b)), expected)


def test_twelve_bits_pack_into_two_bytes_with_zero_padding():
    signs = np.ones((3, 12), dtype=bool)
    packed = pack_codes(signs)
    assert packed.shape == (3, 2) and packed.dtype == np.uint8
    assert packed[0].tolist() == [0xFF, 0xF0]
    assert np.array_equal(unpack_codes(packed, 12), signs.astype(np.uint8))


def test_pack_matches_numpy_packbits_big_endian():
    rng = np.random.default_rng(0)
    signs = rng.random((5, 24)) > 0.5
    assert np.array_equal(pack_codes(signs), np.packbits(signs, axis=1))


def test_sign_codes_apply_the_rotation_as_sgn_of_r_h():
    h = np.array([[0.6, -0.8]], dtype=np.float32)
    swap = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    assert unpack_codes(sign_codes(h), 2).tolist() == [[1, 0]]
    assert unpack_codes(sign_codes(h, swap), 2).tolist() == [[0, 1]]


def test_unpack_rejects_codes_of_the_wrong_width():
    with pytest.raises(HashkitError):
        unpack_codes(np.zeros((2, 3), dtype=np.uint8), 32)


def test_code_statistics_of_balanced_and_constant_codes():
    balanced = pack_codes(np.array([[1, 0], [0, 1], [1, 1], [0, 0]]))
    stats = code_statistics(balanced, 2)
    assert stats["balance"] == 0.0
    assert stats["distinct_codes"] == 4
    assert stats["bit_correlation"] == pytest.approx(0.0)
    constant = pack_codes(np.ones((4, 2)))
    assert code_statistics(constant, 2)["balance"] == 0.5
