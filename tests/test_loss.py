"""InfoNCE against a hand computation on 2-d vectors."""
import math

import pytest
import torch

from pipeline.loss import info_nce

R = 1 / math.sqrt(2)
Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
P = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cosines: q0.p0 = 1, q0.p1 = 1/sqrt2, q1.p0 = 0, q1.p1 = 1/sqrt2


def test_in_batch_negatives_match_hand_computation():
    # row 0: logits [2*1, 2*R], positive 0; row 1: logits [2*0, 2*R], positive 1
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(2 * R)))
    row1 = -math.log(math.exp(2 * R) / (math.exp(0) + math.exp(2 * R)))
    expected = (row0 + row1) / 2
    assert expected == pytest.approx(0.330085, abs=1e-6)
    assert info_nce(Q, P, scale=2.0).item() == pytest.approx(expected, abs=1e-6)


def test_hard_negatives_are_extra_columns():
    hn = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    # row 0 scores [p0 1, p1 R, hn0 0, hn1 -1]; row 1 scores [p0 0, p1 R, hn0 1, hn1 0]
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(2 * R) + math.exp(0) + math.exp(-2)))
    row1 = -math.log(math.exp(2 * R) / (math.exp(0) + math.exp(2 * R) + math.exp(2) + math.exp(0)))
    expected = (row0 + row1) / 2
    assert expected == pytest.approx(0.862663, abs=1e-6)
    assert info_nce(Q, P, 2.0, hard_negatives=hn).item() == pytest.approx(expected, abs=1e-6)


def test_scale_invariant_to_vector_length():
    a = info_nce(Q, P, 20.0)
    b = info_nce(Q * 3.0, P * 0.5, 20.0)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_gradients_flow_and_bf16_input_is_computed_in_float32():
    q = Q.clone().requires_grad_(True)
    p = P.clone().requires_grad_(True)
    loss = info_nce(q, p, 2.0)
    loss.backward()
    assert q.grad is not None and p.grad.abs().sum() > 0
    low = info_nce(Q.bfloat16(), P.bfloat16(), 2.0)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(0.330085, abs=1e-2)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="must both be"):
        info_nce(Q, P[:1])
