"""ADMM on a tiny synthetic problem (the demo-model run lives in benchmarks/admm_demo.py)."""

import copy

import pytest
import torch
from torch import nn

from toolchain.kernels.admm import AdmmConfig, accuracy, admm_train_
from toolchain.kernels.patterns import Pattern, follows
from toolchain.kernels.sparsify import SparsifyConfig, apply_pattern_, sparsify_


def _problem():
    torch.manual_seed(0)
    teacher = nn.Linear(32, 4)
    inputs = torch.randn(1024, 32)
    labels = teacher(inputs).argmax(1)
    batches = [(inputs[i:i + 32], labels[i:i + 32]) for i in range(0, 1024, 32)]
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(4):
        for x, y in batches:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval(), batches


# Accuracy floors after ADMM (dense: ~0.99). Unifying 2x2 blocks of the first layer merges
# pairs of input features, which this teacher cannot tolerate: there only "no worse than
# one-shot projection" is asserted.
@pytest.mark.parametrize(("pattern", "sparsity", "floor"), [("2:4", None, 0.95), ("block4x4", 0.5, 0.85),
                                                            ("unify2x2", 0.5, 0.0)])
def test_admm_lands_on_the_pattern_and_keeps_accuracy(pattern, sparsity, floor):
    model, batches = _problem()
    dense_accuracy = accuracy(model, batches)
    one_shot = copy.deepcopy(model)
    apply_pattern_(one_shot, SparsifyConfig(pattern=pattern, sparsity=sparsity, min_features=4))
    config = AdmmConfig(pattern=pattern, sparsity=sparsity, min_features=4, rho=0.1, admm_epochs=5,
                        finetune_epochs=2, lr=3e-3)
    report = admm_train_(model, batches, config)
    assert report.layers == ["0", "2"]
    assert report.primal_residuals[-1] < report.primal_residuals[0]
    for name in report.layers:
        assert follows(model.get_submodule(name).weight, Pattern.parse(pattern))
    after = accuracy(model, batches)
    assert dense_accuracy > 0.9
    assert after >= accuracy(one_shot, batches) - 0.02
    assert after >= floor
    # The trained weights go straight into the sparse modules.
    x = batches[0][0]
    expected = model(x)
    sparsify_(model, SparsifyConfig(pattern=pattern, sparsity=sparsity, prune=False, min_features=4))
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_admm_refuses_a_model_without_eligible_layers():
    with pytest.raises(ValueError, match="no layer"):
        admm_train_(nn.Sequential(nn.ReLU()), [], AdmmConfig())
