"""Soft similarity targets: the loss, both stored forms, their checks and price, and `vlbench run` honouring them."""
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from vlbench import validation
from vlbench.api import CondensedSet, LowRankTargets, TrainProtocol
from vlbench.cli import main
from vlbench.data.synthscenes import generate
from vlbench.testing import ConformanceError, check_condenser
from vlbench.api import VLBenchError
from vlbench.train import TrainData, clip_loss, soft_clip_loss, train, wbce_clip_loss
from plugin_dist import install_dist
from test_plugins import site  # noqa: F401 (the fixture: a private site-packages and a fresh registry)
from test_train import toy_model, toy_pairs


def embeddings(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, 8, generator=g, requires_grad=True)
    text = torch.randn(n, 8, generator=g, requires_grad=True)
    return image, text


def loss_and_grads(loss_fn, image, text, *args):
    loss = loss_fn(F.normalize(image, dim=1), F.normalize(text, dim=1), 0.07, *args)
    return loss, torch.autograd.grad(loss, (image, text))


# ----------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("seed", range(4))  # a loss averaged in another order differs in the last bit for most seeds
@pytest.mark.parametrize("n", [1, 2, 7, 40, 128])
def test_identity_targets_give_clip_loss_bit_for_bit(n, seed):
    image, text = embeddings(n, seed)
    plain, plain_grads = loss_and_grads(clip_loss, image, text)
    soft, soft_grads = loss_and_grads(soft_clip_loss, image, text, torch.eye(n))
    assert torch.equal(plain, soft)
    assert all(torch.equal(a, b) for a, b in zip(plain_grads, soft_grads))


def test_soft_loss_is_the_cross_entropy_against_row_normalised_targets_both_ways():
    image, text = (F.normalize(t.detach(), dim=1) for t in embeddings(5))
    targets = torch.rand(5, 5, generator=torch.Generator().manual_seed(1))
    logits = image @ text.t() / 0.07
    rows = targets / targets.sum(1, keepdim=True)
    cols = targets.t() / targets.t().sum(1, keepdim=True)
    expected = (-(rows * logits.log_softmax(1)).sum(1).mean() - (cols * logits.t().log_softmax(1)).sum(1).mean()) / 2
    assert soft_clip_loss(image, text, 0.07, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    # Only each row's proportions count, so a global scale changes nothing.
    assert soft_clip_loss(image, text, 0.07, 7 * targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_negative_entries_count_as_zero_and_an_empty_row_contributes_nothing():
    image, text = (F.normalize(t.detach(), dim=1) for t in embeddings(4))
    targets = torch.eye(4)
    with_negatives = targets - 0.5 * (1 - targets)
    assert torch.equal(soft_clip_loss(image, text, 0.07, with_negatives), soft_clip_loss(image, text, 0.07, targets))
    # Pair 3 has no partner here (as when its partner fell outside the batch): its two terms are 0, the mean is over 4.
    empty = targets.clone()
    empty[3, 3] = 0
    logits = image @ text.t() / 0.07
    kept = -(logits.log_softmax(1).diagonal()[:3].sum() + logits.t().log_softmax(1).diagonal()[:3].sum()) / 8
    assert soft_clip_loss(image, text, 0.07, empty).item() == pytest.approx(kept.item(), rel=1e-6)


def test_wbce_is_lors_balanced_binary_cross_entropy_on_the_raw_targets():
    image, text = (F.normalize(t.detach(), dim=1) for t in embeddings(5))
    targets = torch.eye(5) * 0.9 + torch.rand(5, 5, generator=torch.Generator().manual_seed(1)) * 0.3 - 0.05
    p = (image @ text.t() / 0.07).sigmoid().double()
    per_entry = -targets * p.log() - (1 - targets) * (1 - p).log()  # no clamping: LoRS reads S as it is
    positive = targets > 0.5
    expected = (per_entry[positive].mean() + per_entry[~positive].mean()) / 2
    assert wbce_clip_loss(image, text, 0.07, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    # Not a softmax over rows: unlike soft_clip_loss, a global scale of the targets changes the loss.
    assert wbce_clip_loss(image, text, 0.07, 0.6 * targets).item() != pytest.approx(expected.item(), rel=1e-3)
    # One pair: no negatives, the positive mean alone (halved), not a NaN.
    one = wbce_clip_loss(image[:1], text[:1], 0.07, torch.ones(1, 1))
    assert one.item() == pytest.approx(-F.logsigmoid(image[0] @ text[0] / 0.07).item() / 2, rel=1e-5)


def test_the_trainer_uses_targets_and_the_identity_changes_nothing():
    pairs = toy_pairs(n_images=12)
    images, text = pairs.select(torch.arange(0, 60, 5))  # one caption per image: 12 pairs
    protocol = TrainProtocol(steps=30, batch_size=8, lr=0.1)  # batches smaller than the set: sub-matrices

    def trained(targets):
        return dict(train(toy_model(0), TrainData.from_condensed(images, text, targets), protocol, seed=0).named_parameters())

    plain, identity, shifted = trained(None), trained(torch.eye(12)), trained(torch.eye(12).roll(1, dims=1))
    assert all(torch.equal(plain[k], identity[k]) for k in plain)
    assert not all(torch.equal(plain[k], shifted[k]) for k in plain)


def test_the_trainer_reads_the_targets_with_the_loss_the_set_names():
    pairs = toy_pairs(n_images=12)
    images, text = pairs.select(torch.arange(0, 60, 5))
    protocol = TrainProtocol(steps=5, batch_size=8, lr=0.1)

    def trained(loss):
        data = TrainData.from_condensed(images, text, torch.eye(12), loss)
        return dict(train(toy_model(0), data, protocol, seed=0).named_parameters())

    cross_entropy, wbce = trained("cross_entropy"), trained("wbce")
    assert not all(torch.equal(cross_entropy[k], wbce[k]) for k in wbce)
    with pytest.raises(VLBenchError, match="unknown target loss 'kl': choose one of cross_entropy, wbce"):
        trained("kl")


# ----------------------------------------------------------------------------- stored forms


def condensed(n=6, targets=None):
    g = torch.Generator().manual_seed(0)
    return CondensedSet(torch.rand(n, 3, 4, 4, generator=g), torch.rand(n, 5, generator=g), soft_targets=targets)


def low_rank(n=6, r=2, diagonal=True):
    g = torch.Generator().manual_seed(2)
    return LowRankTargets(torch.rand(n, r, generator=g), torch.rand(n, r, generator=g),
                          torch.ones(n) if diagonal else None)


def test_factored_targets_are_priced_as_stored_and_expand_to_the_dense_matrix():
    n, r = 6, 2
    factored = low_rank(n, r)
    assert condensed(n).extra_bytes == 0
    assert condensed(n, torch.eye(n)).extra_bytes == n * n * 4
    assert condensed(n, factored).extra_bytes == 2 * n * r * 4 + n * 4
    assert condensed(n, low_rank(n, r, diagonal=False)).extra_bytes == 2 * n * r * 4
    assert torch.allclose(condensed(n, factored).dense_targets(), torch.eye(n) + factored.left @ factored.right.t())


@pytest.mark.parametrize("targets", [torch.eye(6) + 0.1, low_rank(), low_rank(diagonal=False)], ids=["dense", "low-rank",
                                                                                                  "low-rank-no-diagonal"])
def test_both_forms_survive_save_and_load(tmp_path, targets):
    original = condensed(6, targets)
    loaded = CondensedSet.load(original.save(tmp_path / "set"))
    assert type(loaded.soft_targets) is type(targets)
    assert loaded.target_tensors().keys() == original.target_tensors().keys()
    assert all(torch.equal(a, loaded.target_tensors()[k]) for k, a in original.target_tensors().items())
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["soft_targets"] == original.describe_targets() and manifest["extra_bytes"] == original.extra_bytes
    assert loaded.target_loss == "cross_entropy"
    wbce = dataclasses.replace(original, target_loss="wbce")
    assert CondensedSet.load(wbce.save(tmp_path / "wbce")).target_loss == "wbce"


@pytest.mark.parametrize("targets, message", [
    (torch.eye(5), r"soft_targets must be float32 of shape \(6, 6\)"),
    (torch.eye(6).double(), "soft_targets must be float32"),
    (torch.eye(6) * float("nan"), "NaN or infinite"),
    (torch.eye(6).requires_grad_(), "requires grad"),
    (torch.eye(6) * torch.tensor([1.0, 1, 1, 1, 1, -1]), "give image 5 no positive target"),
    (LowRankTargets(torch.rand(6, 2), torch.rand(6, 3)), r"soft_targets.right must be float32 of shape \(6, 2\)"),
    (LowRankTargets(torch.rand(6, 0), torch.rand(6, 0)), r"soft_targets.left must be float32 of shape \(6, 1\)"),
    (LowRankTargets(torch.rand(6, 2), torch.rand(6, 2), torch.ones(5)), r"soft_targets.diagonal must be .* \(6,\)"),
    (LowRankTargets(-torch.ones(6, 1), torch.ones(6, 1)), "give image 0 no positive target"),
    (torch.eye(6).tolist(), "an \\(N, N\\) tensor or a LowRankTargets, got list"),
])
def test_malformed_targets_are_refused_in_one_line(targets, message):
    with pytest.raises(validation.InvalidSet, match=message):
        validation.check_shapes(condensed(6, targets), validation.Expected(
            budget=6, num_train=10, declared_extras=frozenset({"soft_targets"}), image_size=4, text_dim=5,
            normalization=None))


def test_declared_extras_must_be_ones_evaluation_uses():
    validation.check_declared(frozenset({"soft_targets", "learned_lrs"}))
    with pytest.raises(validation.InvalidSet, match=r"declares extras \['mixing_weights'\] that evaluation cannot use"):
        validation.check_declared(frozenset({"soft_targets", "mixing_weights"}))
    with pytest.raises(validation.InvalidSet, match="declares `extras` = 'soft_targets', not a frozenset of names"):
        validation.check_declared("soft_targets")  # a string would be read as its letters


# ----------------------------------------------------------------------------- a condenser with targets


# Random pairs (the very ones `random` picks) plus targets pairing image i with caption i + shift.
PAIRED = """
from dataclasses import dataclass

import torch

from vlbench import hookimpl
from vlbench.api import LowRankTargets
from vlbench_plugins.random_subset import RandomPairs


@dataclass
class PairedConfig:
    shift: int = 0
    form: str = "dense"
    loss: str = "cross_entropy"


class Paired(RandomPairs):
    name = "paired"
    Config = PairedConfig
    extras = frozenset({"soft_targets"})

    def condense(self, ctx):
        out = super().condense(ctx)
        n = len(out)
        if self.config.form == "dense":
            out.soft_targets = torch.eye(n).roll(self.config.shift, dims=1)
        else:  # the identity, factored: a diagonal of ones and a zero rank-1 product
            out.soft_targets = LowRankTargets(torch.zeros(n, 1), torch.zeros(n, 1), torch.ones(n))
        out.target_loss = self.config.loss
        return out


class Mixing(RandomPairs):
    name = "mixing"
    extras = frozenset({"mixing_weights"})


@hookimpl
def register_condensers(register):
    register(Paired)
    register(Mixing)
"""


@pytest.fixture
def paired(site):
    """The two condensers above as an installed third-party distribution."""
    install_dist(site, "vlbench-paired", {"vlb_paired": PAIRED}, {"paired": "vlb_paired"})
    import vlb_paired
    return vlb_paired


def test_the_conformance_kit_checks_both_forms(paired, vlbench_cache):
    for form in ("dense", "low_rank"):
        report = check_condenser(paired.Paired, budget=8, options={"form": form})
        assert report.condensed.describe_targets()["form"] == form

    class Undeclared(paired.Paired):
        extras = frozenset()

    class Double(paired.Paired):
        def condense(self, ctx):
            out = super().condense(ctx)
            out.soft_targets = out.soft_targets.double()
            return out

    class Unseeded(paired.Paired):
        def condense(self, ctx):
            out = super().condense(ctx)
            out.soft_targets = LowRankTargets(torch.rand(len(out), 1), torch.rand(len(out), 1))  # the global RNG
            return out

    with pytest.raises(ConformanceError, match="extras: stores soft_targets without declaring it"):
        check_condenser(Undeclared, budget=8)
    with pytest.raises(ConformanceError, match="determinism: two runs with seed 0 differ: soft_targets.left differ"):
        check_condenser(Unseeded, budget=8)
    with pytest.raises(ConformanceError, match=r"shapes: soft_targets must be float32 of shape \(8, 8\), got torch.float64"):
        check_condenser(Double, budget=8)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny synthscenes tree, a private cache, and a config with a short protocol (as in test_cli)."""
    base = tmp_path_factory.mktemp("soft")
    generate(base / "data", seed=0, train=60, val=4, test=30, pretrain=0)
    config = base / "tiny.yaml"
    # The shipped pretrained ViT and 100 steps: random pairs learn well above chance (~17 here) in seconds.
    config.write_text(f"data_root: {base / 'data'}\nevals: 1\nprotocol: {{steps: 100, batch_size: 32}}\n")
    return base, config


def run(env, results, condenser, *options):
    base, config = env
    args = ["run", "--condenser", condenser, "--budget", "100", "--config", str(config), "--results", str(base / results)]
    assert main([*args, *(a for o in options for a in ("-o", o))]) == 0
    (path,) = (base / results / "records").glob("*.json")
    return json.loads(path.read_text())


def test_runs_train_with_the_sets_targets(paired, env, monkeypatch, capsys):
    monkeypatch.setenv("VLBENCH_CACHE", str(env[0] / "cache"))
    random = run(env, "random", "random")
    identity = run(env, "identity", "paired", "form=low_rank")
    shifted = run(env, "shifted", "paired", "shift=1")
    shifted_wbce = run(env, "shifted-wbce", "paired", "shift=1", "loss=wbce")
    # The same 100 pairs as random; identity targets train exactly as no targets (batches of 32: sub-matrices).
    assert identity["metrics"]["per_seed"] == random["metrics"]["per_seed"]
    assert identity["condensed"]["soft_targets"] == {"form": "low_rank", "rank": 1, "diagonal": True,
                                                     "loss": "cross_entropy"}
    assert identity["condensed"]["extra_bytes"] == 2 * 100 * 1 * 4 + 100 * 4
    assert shifted["condensed"]["soft_targets"] == {"form": "dense", "loss": "cross_entropy"}
    assert shifted["condensed"]["extra_bytes"] == 100 * 100 * 4
    assert shifted_wbce["condensed"]["soft_targets"] == {"form": "dense", "loss": "wbce"}
    assert random["condensed"]["soft_targets"] is None
    # Image i trained towards caption i + 1: the targets are honoured, so it falls to chance (~17; random: 39).
    assert shifted["metrics"]["mean"]["mean"] < random["metrics"]["mean"]["mean"] - 15
    assert shifted_wbce["metrics"]["mean"]["mean"] < random["metrics"]["mean"]["mean"] - 15  # read per entry alike

    for results in ("random", "shifted"):
        assert main(["leaderboard", "--results", str(env[0] / results)]) == 0
    assert "| paired 1.0 [" in (env[0] / "shifted" / "LEADERBOARD.md").read_text()
    assert "] ‡" in (env[0] / "shifted" / "LEADERBOARD.md").read_text()
    assert "‡" not in (env[0] / "random" / "LEADERBOARD.md").read_text()


def test_a_condenser_declaring_an_extra_evaluation_cannot_use_is_refused_before_condensing(paired, env, monkeypatch,
                                                                                           capsys):
    monkeypatch.setenv("VLBENCH_CACHE", str(env[0] / "cache"))
    base, config = env
    assert main(["run", "--condenser", "mixing", "--budget", "4", "--config", str(config),
                 "--results", str(base / "mixing")]) != 0
    err = capsys.readouterr().err.strip()
    assert err == ("vlbench: error: condenser 'mixing' (from vlbench-paired 1.0) declares extras ['mixing_weights'] "
                   "that evaluation cannot use (it uses: learned_lrs, soft_targets)")
    assert not (base / "cache" / "condensed").exists() or not list((base / "cache" / "condensed").glob("mixing-*"))
