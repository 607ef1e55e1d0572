"""Data-free criteria on GPT-2: its `Conv1D` projections are invisible to Torch-Pruning's importance."""

import copy

import pytest
import torch

from toolchain.graph import PruningGraph
from toolchain.saliency import SaliencyConfig, score_groups_report

pytest.importorskip("transformers", reason="transformers is not installed")


@pytest.fixture(scope="module")
def gpt2():
    from toolchain.coverage import build

    return build("transformers:gpt2", "small")


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale", "redundancy"])
def test_every_gpt2_group_gets_finite_scores_and_shrinks_verified(gpt2, criterion):
    """l1/l2/bn_scale crashed ('NoneType' has no 'detach'), redundancy read the [in, out] weight as [out, in]."""
    model = copy.deepcopy(gpt2.model).eval()
    graph = PruningGraph(model, gpt2.inputs)
    assert graph.groups, "GPT-2 has prunable groups"
    scores, _report = score_groups_report(model, graph, criterion, None, SaliencyConfig())
    for group in graph.groups:
        score = scores[group.name]
        assert score.shape == (group.width,) and torch.isfinite(score).all() and score.abs().sum() > 0
    graph.shrink({g.name: max(g.unit, g.width // 2 // g.unit * g.unit) for g in graph.groups}, scores)
    assert graph.verified_error is not None and graph.verified_error < 1e-4


def test_l1_ranks_conv1d_channels_by_their_weights(gpt2):
    model = copy.deepcopy(gpt2.model).eval()
    mlp = model.h[0].mlp
    with torch.no_grad():
        mlp.c_fc.weight[:, 5] = 0.0  # channel 5 of the feed-forward width: no input weights...
        mlp.c_proj.weight[5, :] = 0.0  # ...and no output weights
        mlp.c_fc.bias[5] = 0.0
    graph = PruningGraph(model, gpt2.inputs)
    scores, _report = score_groups_report(model, graph, "l1", None, SaliencyConfig())
    assert int(scores["h.0.mlp.c_fc"].argmin()) == 5
