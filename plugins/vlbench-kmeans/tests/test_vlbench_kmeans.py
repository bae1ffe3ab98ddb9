"""The plugin's own tests: vlbench's conformance kit plus what is specific to k-means."""
import pytest
import torch

from vlbench.api import VLBenchError
from vlbench.testing import check_condenser, make_context
from vlbench_kmeans.condenser import KMeansPrototypes, kmeans, nearest_distinct


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    # The kit generates its data slice into the vlbench cache; keep it out of ~/.cache.
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "vlbench-cache"))


def test_conforms_to_the_vlbench_contract():
    report = check_condenser(KMeansPrototypes, budget=10, options={"iterations": 5})
    assert report.condensed.source_indices.unique().numel() == 10


def test_picks_one_pair_per_well_separated_cluster():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([centres + 0.1 * torch.randn(3, 2, generator=torch.Generator().manual_seed(i)) for i in range(20)])
    found = kmeans(points, 3, iterations=10, generator=torch.Generator().manual_seed(0))
    picked = nearest_distinct(points, found)
    assert sorted(i % 3 for i in picked) == [0, 1, 2]  # point i belongs to cluster i % 3


def test_nearest_distinct_never_repeats_a_pair():
    points = torch.tensor([[0.0], [1.0], [5.0]])
    assert nearest_distinct(points, torch.tensor([[0.0], [0.1], [0.2]])) == [0, 1, 2]


def test_asks_for_a_budget_within_the_training_pairs(tmp_path):
    ctx = make_context(tmp_path, budget=0)
    with pytest.raises(VLBenchError, match="budget must be between 1 and the 200 training pairs, got 0"):
        KMeansPrototypes().condense(ctx)
