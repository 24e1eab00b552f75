import pytest
import torch

from personactl.aggregators import METHODS, separation


def _planted(n=200, layers=3, hidden=16, seed=0):
    """Pairs that differ along a known unit direction plus noise shared within a pair."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(layers, hidden, generator=g)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    shared = torch.randn(n, layers, hidden, generator=g) * 3
    noise = lambda: torch.randn(n, layers, hidden, generator=g) * 0.3  # noqa: E731
    return shared + 2 * direction + noise(), shared - 2 * direction + noise(), direction


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_recovers_the_planted_direction_with_the_right_sign(method):
    pos, neg, direction = _planted()
    found = METHODS[method](pos, neg)
    cosine = torch.nn.functional.cosine_similarity(found, direction, dim=-1)
    assert (cosine > 0.9).all(), cosine
    unit = found / found.norm(dim=-1, keepdim=True)
    assert ((pos * unit).sum(-1).mean(0) > (neg * unit).sum(-1).mean(0)).all()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_swapping_classes_flips_the_direction(method):
    pos, neg, _ = _planted(seed=3)
    torch.testing.assert_close(METHODS[method](neg, pos), -METHODS[method](pos, neg), rtol=1e-3, atol=1e-3)


def test_separation_is_large_for_a_clear_signal_and_small_for_noise():
    pos, neg, direction = _planted()
    assert (separation(pos, neg, direction) > 1).all()  # gap 4 over a spread of 3
    g = torch.Generator().manual_seed(9)
    same = torch.randn(200, 3, 16, generator=g)
    assert (separation(same, torch.randn(200, 3, 16, generator=g), direction).abs() < 0.4).all()
