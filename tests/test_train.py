import torch
from torch import nn

from vlbench.api import CondensedSet, Pairs, TrainProtocol
from vlbench.modules import DualEncoder
from vlbench.train import TrainData, clip_loss, evaluate, make_optimizer, train


def toy_pairs(n_images=40, seed=0):
    """Images whose mean colour encodes a 4-d code; captions are noisy copies of the same code."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(n_images, 4, generator=g)
    images = codes[:, :3, None, None].expand(-1, 3, 8, 8).clone() + 0.1 * codes[:, 3:, None, None]
    pair_image = torch.arange(n_images).repeat_interleave(5)
    text = torch.cat([codes, torch.zeros(n_images, 4)], 1)[pair_image] + 0.05 * torch.randn(len(pair_image), 8, generator=g)
    return Pairs(images, pair_image, text, [f"c{i}" for i in range(len(pair_image))])


def toy_model(seed):
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return DualEncoder(encoder, image_dim=8, text_dim=8, embed_dim=16)


def test_clip_loss_is_symmetric_infonce():
    a = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    logits = a @ b.t() / 0.07
    expected = (torch.nn.functional.cross_entropy(logits, torch.arange(6)) + torch.nn.functional.cross_entropy(logits.t(), torch.arange(6))) / 2
    assert torch.allclose(clip_loss(a, b, 0.07), expected)
    assert clip_loss(a, a, 0.07) < clip_loss(a, b, 0.07)


def test_training_improves_retrieval_and_is_seeded():
    pairs = toy_pairs()
    protocol = TrainProtocol(steps=150, batch_size=32, lr=0.1)
    before = evaluate(toy_model(0), pairs)["mean"]
    model = train(toy_model(0), TrainData.from_pairs(pairs), protocol, seed=0)
    after = evaluate(model, pairs)["mean"]
    assert after > before + 20
    again = train(toy_model(0), TrainData.from_pairs(pairs), protocol, seed=0)
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name


def test_learned_lrs_replace_protocol_lr_per_side():
    model = toy_model(0)
    opt = make_optimizer(model, TrainProtocol(lr=0.5, learned_lr_momentum=0.0), {"image": 0.01, "text": 0.02})
    lrs = {g["name"]: (g["lr"], g["momentum"]) for g in opt.param_groups}
    assert lrs == {"image": (0.01, 0.0), "text": (0.02, 0.0)}


def test_parameters_split_by_side():
    sides = toy_model(0).trainable_by_side()
    assert all(n.startswith("image_") for n in sides["image"]) and sides["image"]
    assert all(n.startswith("text_") for n in sides["text"]) and sides["text"]


def test_condensed_set_round_trip(tmp_path):
    pairs = toy_pairs()
    s = CondensedSet.from_indices(pairs, [3, 7, 11], condenser="test")
    s.learned_lrs = {"image": 0.1, "text": 0.2}
    s.save(tmp_path / "set")
    back = CondensedSet.load(tmp_path / "set")
    assert torch.equal(back.images, pairs.images[pairs.pair_image[[3, 7, 11]]])
    assert torch.equal(back.text_features, pairs.text_features[[3, 7, 11]])
    assert back.source_indices.tolist() == [3, 7, 11]
    assert back.learned_lrs == {"image": 0.1, "text": 0.2}
    assert back.meta["condenser"] == "test"
    assert back.extra_bytes == 8
    assert back.storage_bytes == s.images.nbytes + s.text_features.nbytes + 8


def test_training_mode_survives_an_evaluating_epoch_callback():
    pairs = toy_pairs()
    modes = []

    def callback(epoch, model):
        evaluate(model, pairs)  # leaves the model in eval mode

    model = toy_model(0)
    model.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    train(model, TrainData.from_pairs(pairs), TrainProtocol(steps=14, batch_size=32), seed=0, on_epoch_end=callback)
    assert modes.count(True) == 14  # every training step ran in training mode


def test_dropout_is_seeded_by_the_model_seed_and_leaves_the_global_rng_alone():
    def dropout_model():
        torch.manual_seed(0)
        encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return DualEncoder(encoder, image_dim=8, text_dim=8, embed_dim=16, dropout=0.5)

    data, protocol = TrainData.from_pairs(toy_pairs()), TrainProtocol(steps=5, batch_size=16)
    torch.manual_seed(123)
    a = train(dropout_model(), data, protocol, seed=0)
    model = dropout_model()
    torch.manual_seed(456)  # another global RNG state: the same seed still trains the same model
    state = torch.random.get_rng_state()
    b = train(model, data, protocol, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    c = train(dropout_model(), data, protocol, seed=1)
    params = [list(m.trainable_parameters().values()) for m in (a, b, c)]
    assert all(torch.equal(x, y) for x, y in zip(params[0], params[1]))
    assert not all(torch.equal(x, y) for x, y in zip(params[0], params[2]))


def test_precision_is_in_the_protocol_id_and_fp32_keeps_the_ids_records_have():
    import pytest

    from vlbench.api import RunSpec, VLBenchError

    assert TrainProtocol().id == "v2-38042a"  # the committed board's, made before the field existed
    assert TrainProtocol(precision="fp32").id == TrainProtocol().id
    assert TrainProtocol(precision="bf16").id != TrainProtocol().id
    assert "precision" not in RunSpec("random", 10).to_dict()["protocol"]  # run keys stay too
    assert RunSpec("random", 10, protocol=TrainProtocol(precision="bf16")).to_dict()["protocol"]["precision"] == "bf16"
    with pytest.raises(VLBenchError, match="precision must be one of fp32, bf16"):
        TrainProtocol(precision="fp16")


def test_bf16_precision_reaches_autocast_and_fp32_stays_full_precision():
    data = TrainData.from_pairs(toy_pairs())
    trained, dtypes = {}, {}
    for precision in ("fp32", "bf16"):
        model, seen = toy_model(0), set()
        model.text_head.proj.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
        trained[precision] = train(model, data, TrainProtocol(steps=3, batch_size=16, precision=precision), seed=0)
        dtypes[precision] = seen
    assert dtypes == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    assert all(p.dtype == torch.float32 for p in trained["bf16"].parameters())  # autocast, not a bf16 model
    assert not torch.equal(trained["fp32"].text_head.proj.weight, trained["bf16"].text_head.proj.weight)
