import numpy as np
import pytest

from hashkit.codes import (
    check_packed,
    code_statistics,
    convert_bit_order,
    hamming_distances,
    pack_codes,
    sign_codes,
    unpack_codes,
)
from hashkit.errors import HashkitError


@pytest.mark.parametrize("bits", [12, 32, 64])
def test_hamming_distance_of_packed_codes_equals_unpacked_count(bits):
    rng = np.random.default_rng(bits)
    a = rng.random((20, bits)) > 0.5
    b = rng.random((30, bits)) > 0.5
    expected = (a[:, None, :] != b[None, :, :]).sum(axis=2)
    assert np.array_equal(hamming_distances(pack_codes(a), pack_codes(b)), expected)


def test_twelve_bits_pack_into_two_bytes_with_the_padding_in_the_high_bits():
    signs = np.ones((3, 12), dtype=bool)
    packed = pack_codes(signs)
    assert packed.shape == (3, 2) and packed.dtype == np.uint8
    assert packed[0].tolist() == [0xFF, 0x0F]
    assert np.array_equal(unpack_codes(packed, 12), signs.astype(np.uint8))


def test_bit_j_is_bit_j_mod_8_of_byte_j_div_8():
    for j in range(12):
        signs = np.zeros((1, 12), dtype=bool)
        signs[0, j] = True
        expected = [0, 0]
        expected[j // 8] = 1 << (j % 8)
        assert pack_codes(signs)[0].tolist() == expected


@pytest.mark.parametrize("bits", [8, 24, 64])
def test_pack_matches_faiss_real_to_binary(bits):
    faiss = pytest.importorskip("faiss")
    x = np.random.default_rng(bits).standard_normal((7, bits)).astype(np.float32)
    expected = np.zeros((7, bits // 8), dtype=np.uint8)
    faiss.real_to_binary(x.size, faiss.swig_ptr(x), faiss.swig_ptr(expected))
    assert np.array_equal(sign_codes(x), expected)
    assert np.array_equal(pack_codes(x > 0), np.packbits(x > 0, axis=1, bitorder="little"))


@pytest.mark.parametrize("bits", [12, 32])
def test_converting_old_big_order_codes_gives_the_codes_of_the_same_signs(bits):
    signs = np.random.default_rng(bits).random((9, bits)) > 0.5
    old = np.packbits(signs, axis=1, bitorder="big")
    assert np.array_equal(convert_bit_order(old, "big"), pack_codes(signs))
    assert np.array_equal(convert_bit_order(pack_codes(signs), "little", "big"), old)
    assert convert_bit_order(old, "little", "little") is old
    with pytest.raises(HashkitError, match="bit order"):
        convert_bit_order(old, "middle")


# Each case: (codes, bits) that no function taking packed codes may accept, and the message.
BAD_CODES = [
    (np.zeros((2, 2), dtype=np.float32), 12, "float32"),
    (np.full((2, 2), np.nan), 12, "float64"),
    (np.full((2, 2), -1, dtype=np.int8), 12, "int8"),
    (np.zeros((2, 2), dtype=np.int64), 12, "int64"),
    (np.zeros((2, 2), dtype=bool), 12, "bool"),
    (np.zeros((2, 3), dtype=np.uint8), 12, "2 byte"),
    (np.zeros(4, dtype=np.uint8), 16, "2-d"),
    (np.array([[0, 0], [0, 0x10]], dtype=np.uint8), 12, "padding bits set"),
    (np.array([[0x80]], dtype=np.uint8), 7, "padding bits set"),
]


@pytest.mark.parametrize("codes,bits,message", BAD_CODES)
def test_check_packed_refuses_floats_wrong_dtypes_widths_and_set_padding(codes, bits, message):
    with pytest.raises(HashkitError, match=message):
        check_packed(codes, bits)


@pytest.mark.parametrize("bits", [0, -8, 12.0, True, "12"])
def test_check_packed_refuses_bits_that_are_not_a_positive_integer(bits):
    with pytest.raises(HashkitError, match="bits"):
        check_packed(np.zeros((1, 2), dtype=np.uint8), bits)


@pytest.mark.parametrize("codes,bits,message", BAD_CODES)
def test_unpack_and_hamming_refuse_bad_codes_instead_of_casting(codes, bits, message):
    with pytest.raises(HashkitError, match=message):
        unpack_codes(codes, bits)
    good = np.zeros((1, 2), dtype=np.uint8)
    with pytest.raises(HashkitError):
        hamming_distances(codes, good if codes.ndim == 2 else good[0], bits)


def test_hamming_distances_without_bits_still_refuse_other_dtypes():
    with pytest.raises(HashkitError, match="float64"):
        hamming_distances(np.zeros((2, 2)), np.zeros((2, 2), np.uint8))
    with pytest.raises(HashkitError, match="int64"):
        hamming_distances(np.zeros((2, 2), np.uint8), np.full((2, 2), -1))


def test_pack_codes_refuses_nan_signs_and_strings():
    with pytest.raises(HashkitError, match="NaN"):
        pack_codes(np.array([[0.5, np.nan]]))
    with pytest.raises(HashkitError, match="numbers"):
        pack_codes(np.array([["1", "0"]]))


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
