"""The paper's backbones on small configs with random weights: nfnet-bert and clip (LoRA)."""
import copy
from dataclasses import asdict

import open_clip
import peft
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoModel, AutoTokenizer

from tiny_models import write_tiny_bert, write_tiny_clip
from vlbench.api import Pairs, TrainProtocol, VLBenchError
from vlbench.text_encoders import BertCLSEncoder
from vlbench.train import TrainData, clip_loss, evaluate, train
from vlbench_plugins.clip_lora import CLIPLoRA
from vlbench_plugins.nfnet_bert import NFNetBERT

CAPTIONS = ["a red dog on the tree", "two small cats", "a blue car", "the green tree with a cat",
            "a photo of a big dog", "red car in the photo", "a cat", "two blue dogs on a car"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return f"local-dir:{write_tiny_clip(tmp_path_factory.mktemp('clip'))}"


@pytest.fixture(scope="module")
def nfnet(tiny_bert):
    return NFNetBERT(image_size=32, pretrained=None, text_model=str(tiny_bert))


@pytest.fixture(scope="module")
def small_nfnet(tiny_bert):
    """timm's 0.2M-parameter NFNet: the same model class, for double backward at test speed."""
    return NFNetBERT(image_model="test_nfnet", image_size=32, pretrained=None, text_model=str(tiny_bert))


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return CLIPLoRA(model=tiny_clip, pretrained=None)


def toy_pairs(backbone, n_images=4):
    captions = CAPTIONS[: 2 * n_images]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n_images, 3, backbone.image_size, backbone.image_size, generator=g)
    text = backbone.text_encoder.encode(captions)
    return Pairs(images, torch.arange(n_images).repeat_interleave(2), text, captions)


@pytest.mark.parametrize("name", ["nfnet", "clip"])
def test_one_training_step_then_evaluation(name, request):
    backbone = request.getfixturevalue(name)
    pairs = toy_pairs(backbone)
    model = backbone.build(0)
    trainable = model.trainable_parameters()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    train(model, TrainData.from_pairs(pairs), TrainProtocol(steps=1, batch_size=8, lr=0.1, weight_decay=0), seed=0)
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed <= set(trainable)  # frozen weights stay put
    assert any(n.startswith("image_") for n in changed) and any(n.startswith("text_head.") for n in changed)
    metrics = evaluate(model, pairs)
    assert {"tr@1", "ir@1", "mean"} <= set(metrics) and all(0 <= v <= 100 for v in metrics.values())


def test_nfnet_bert_is_the_official_model(nfnet, tiny_bert):
    model = nfnet.build(0)
    sides = model.trainable_by_side()
    encoder_params = {f"image_encoder.{n}" for n, _ in model.image_encoder.named_parameters()}
    assert set(sides["image"]) == encoder_params  # the whole nfnet_l0 trains; no image head
    assert set(sides["text"]) == {n for n, _ in model.named_parameters() if n.startswith("text_head.")}
    assert model.lora_parameter_names() == set()
    text = nfnet.text_encoder.encode(CAPTIONS[:2])
    assert text.shape == (2, 16)  # the tiny BERT's hidden size
    assert model.encode_text(text).shape == (2, 2304)  # nfnet_l0's pooled features are the joint space
    assert model.text_head.dropout.p == 0.1
    assert nfnet.normalization == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet's, not CLIP's


def test_bert_encoder_takes_the_cls_token(tiny_bert):
    encoder = BertCLSEncoder(str(tiny_bert))
    tokenizer, bert = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert)
    expected = bert(**tokenizer(CAPTIONS[:1], return_tensors="pt")).last_hidden_state[0, 0]
    features = encoder.encode(CAPTIONS, batch_size=3)  # padded batches
    assert features.shape == (len(CAPTIONS), 16) and encoder.dim == 16
    assert torch.allclose(features[0], expected, atol=1e-5)
    assert BertCLSEncoder(str(tiny_bert)).id == encoder.id


def test_bert_encoder_id_follows_the_weights(tmp_path):
    first = BertCLSEncoder(str(write_tiny_bert(tmp_path, seed=0))).id
    assert BertCLSEncoder(str(write_tiny_bert(tmp_path, seed=1))).id != first  # cached features must not be reused


def test_clip_trains_only_lora_on_the_image_side(clip, tiny_clip):
    model = clip.build(0)
    image = model.trainable_by_side()["image"]
    assert image and set(image) == model.lora_parameter_names()
    fresh = open_clip.create_model(tiny_clip, pretrained=None).visual
    trainable, _ = peft.get_peft_model(fresh, clip.lora_config()).get_nb_trainable_parameters()
    assert sum(p.numel() for p in image.values()) == trainable
    for block in range(2):  # attention (in_proj, out_proj) and both MLP layers of every block
        prefix = f"image_encoder.transformer.resblocks.{block}."
        for layer in ("attn.", "attn.base_layer.out_proj.", "mlp.c_fc.", "mlp.c_proj."):
            assert f"{prefix}{layer}lora_A.default.weight" in image
    assert set(model.trainable_by_side()["text"]) == {n for n, _ in model.named_parameters() if n.startswith("text_head.")}
    assert clip.normalization[0] == CLIP_MEAN and clip.image_size == 32


def test_clip_text_feature_is_the_frozen_text_tower_output(clip, tiny_clip):
    reference = open_clip.create_model(tiny_clip, pretrained=None)
    reference.load_state_dict(clip._clip.state_dict())
    tokens = open_clip.get_tokenizer(tiny_clip)(CAPTIONS[:3])
    with torch.no_grad():
        expected = reference.encode_text(tokens)
    assert torch.allclose(clip.text_encoder.encode(CAPTIONS[:3]), expected, atol=1e-5)
    assert clip.text_encoder.id == CLIPLoRA(model=tiny_clip, pretrained=None).text_encoder.id


def test_clip_options(tiny_clip):
    full = CLIPLoRA(model=tiny_clip, pretrained=None, lora_rank=0).build(0)
    assert full.lora_parameter_names() == set()
    assert set(full.trainable_by_side()["image"]) == {f"image_encoder.{n}" for n, _ in full.image_encoder.named_parameters()}
    with pytest.raises(VLBenchError, match="lora_targets.*do not fit"):
        CLIPLoRA(model=tiny_clip, pretrained=None, lora_targets=["qkv"]).build(0)
    with pytest.raises(VLBenchError, match="no option.*rank"):
        CLIPLoRA(rank=4)


@pytest.mark.parametrize("name", ["small_nfnet", "clip"])
def test_functional_forward_unrolls_training(name, request):
    """What trajectory matching does: SGD steps on named tensors, then gradients to the data."""
    backbone = request.getfixturevalue(name)
    model = backbone.build(0).eval()
    pairs = toy_pairs(backbone)
    state = copy.deepcopy(model.state_dict())
    params = {n: p.detach().clone().requires_grad_() for n, p in model.trainable_parameters().items()}
    pixels = pairs.images.clone().requires_grad_()
    text = pairs.text_features[::2].clone().requires_grad_()
    with torch.no_grad():
        assert torch.allclose(functional_call(model, params, (pixels, text))[0], model(pixels, text)[0], atol=1e-5)
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernel has no double backward
        for _ in range(2):
            loss = clip_loss(*functional_call(model, params, (pixels, text)), model.temperature)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            params = {n: w - 0.1 * g for (n, w), g in zip(params.items(), grads)}
        target = sum((w**2).sum() for w in params.values())
        grad_pixels, grad_text = torch.autograd.grad(target, [pixels, text])
    assert grad_pixels.abs().sum() > 0 and grad_text.abs().sum() > 0
    assert all(torch.allclose(v, state[k], atol=1e-6) for k, v in model.state_dict().items())  # module state untouched


def test_nfnet_loads_a_local_checkpoint(tmp_path, tiny_bert):
    torch.manual_seed(1)
    reference = timm.create_model("nfnet_l0", num_classes=1000).state_dict()  # with its classifier, as published
    save_file(reference, str(tmp_path / "nfnet_l0.safetensors"))
    backbone = NFNetBERT(image_size=32, pretrained=str(tmp_path / "nfnet_l0.safetensors"), text_model=str(tiny_bert))
    loaded = backbone.build(0).image_encoder.state_dict()
    assert loaded and all(torch.equal(v, reference[k]) for k, v in loaded.items())


def test_nfnet_weight_errors_say_what_to_do(tmp_path, tiny_bert, monkeypatch):
    with pytest.raises(VLBenchError, match="not found"):
        NFNetBERT(pretrained=str(tmp_path / "missing.pth")).prepare()

    def offline(*args, **kwargs):
        raise OSError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(VLBenchError, match="cannot create nfnet_l0 .*null to start from random weights") as e:
        NFNetBERT(text_model=str(tiny_bert)).build(0)
    assert "\n" not in str(e.value)
    with pytest.raises(VLBenchError, match="cannot load text model"):
        _ = BertCLSEncoder(str(tmp_path / "no-bert")).dim


def test_default_backbone_uses_the_shipped_pretrained_checkpoint(tmp_path, monkeypatch):
    """The committed results were made with these weights: every machine must load the same file."""
    import hashlib

    from vlbench_plugins.tinyvit_minilm import SHIPPED_WEIGHTS, TinyViTMiniLM

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path))
    path = TinyViTMiniLM().checkpoint_path()
    assert path.parent == SHIPPED_WEIGHTS
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("5c3ee6fa9be90673")
    # Another architecture has no shipped weights: it is pretrained into the cache.
    assert TinyViTMiniLM(depth=2).checkpoint_path().parent == tmp_path / "pretrained"


def test_spelling_out_a_default_option_keeps_the_default_id():
    from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM

    assert TinyViTMiniLM(lora_rank=4).id == TinyViTMiniLM().id == "tinyvit-minilm"
    assert TinyViTMiniLM(lora_rank=8).id != "tinyvit-minilm"
    assert TinyViTMiniLM(lora_rank=8).full_finetuning().id == TinyViTMiniLM(lora_rank=0).id


# ----------------------------------------------------------------------------- convnet-minilm


CONVNET_SHA256 = "696290a14c20a147"  # plugins/weights/convnet-b51bc871e7.safetensors


@pytest.fixture(scope="module")
def convnet():
    from vlbench_plugins.convnet_minilm import ConvNetMiniLM

    return ConvNetMiniLM()  # the shipped pretrained checkpoint


def test_convnet_is_mtts_convnet():
    """mtt-distillation networks.py ConvNet, default setting: width 128, depth 3, relu, instancenorm, avgpooling."""
    from vlbench_plugins.convnet_minilm import ConvNetMiniLM

    backbone = ConvNetMiniLM(pretrained=None, lora_rank=0)
    encoder = backbone.build(0).image_encoder.convnet
    assert len(encoder.blocks) == 3
    for k, block in enumerate(encoder.blocks):
        conv, norm, pool = block.conv, block.norm, block.pool
        assert (conv.in_channels, conv.out_channels) == (3 if k == 0 else 128, 128)
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.bias is not None
        assert isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == norm.num_channels == 128 and norm.affine
        assert isinstance(pool, torch.nn.AvgPool2d) and pool.kernel_size == pool.stride == 2
    x = torch.randn(2, 3, 32, 32)
    assert encoder(x).shape == (2, 128, 4, 4)
    assert backbone.image_size == 32 and backbone.build(0).image_head.proj.in_features == 2048  # MTT's flattened embedding
    d4 = ConvNetMiniLM(pretrained=None, depth=4, image_size=64)  # MTT's ConvNetD4
    assert d4.build(0).image_head.proj.in_features == 128 * 4 * 4
    with pytest.raises(VLBenchError, match="too small for depth"):
        ConvNetMiniLM(image_size=4, depth=3)


def test_convnet_trains_lora_on_every_convolution_and_shares_the_text_side(convnet):
    from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM

    model = convnet.build(0)
    image = model.trainable_by_side()["image"]
    lora = {n for n in image if "lora_" in n}
    assert lora == {f"image_encoder.convnet.blocks.{k}.conv.lora_{ab}.default.weight" for k in range(3) for ab in "AB"}
    assert set(image) - lora == {n for n, _ in model.image_head.named_parameters(prefix="image_head")}
    full = convnet.full_finetuning().build(0)  # what `tm` matches: every weight
    assert {f"image_encoder.convnet.blocks.{k}.{m}.{w}" for k in range(3) for m in ("conv", "norm")
            for w in ("weight", "bias")} <= set(full.trainable_by_side()["image"])
    vit = TinyViTMiniLM()
    assert convnet.text_encoder.id == vit.text_encoder.id and convnet.text_encoder.dim == vit.text_encoder.dim
    assert type(model.text_head) is type(vit.build(0).text_head)
    assert convnet.normalization != vit.normalization  # its own: the pretrain split's channel statistics


def test_convnet_id_is_stable_and_its_weights_ship(convnet, tmp_path, monkeypatch):
    import hashlib

    from vlbench_plugins.convnet_minilm import ConvNetMiniLM
    from vlbench_plugins.tinyvit_minilm import SHIPPED_WEIGHTS

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path))
    assert convnet.id == ConvNetMiniLM(lora_rank=4, width=128).id == "convnet-minilm"
    assert ConvNetMiniLM(width=64).id != "convnet-minilm"
    assert convnet.full_finetuning().id == ConvNetMiniLM(lora_rank=0).id
    path = convnet.checkpoint_path()
    assert path.parent == SHIPPED_WEIGHTS and path.name.startswith("convnet-")
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(CONVNET_SHA256)
    assert set(convnet.weight_files()) == {"image_encoder", "text_encoder/model.safetensors"}
    assert ConvNetMiniLM(width=64).checkpoint_path().parent == tmp_path / "pretrained"  # pretrained on first use


CONVNETW32_SHA256 = "4159da8e2b48c417"  # plugins/weights/convnet-837813385f.safetensors


def test_convnetw32_is_the_width_32_convnet_under_a_name_of_its_own():
    """DC's and MTT's ConvNetW32: convnet-minilm at width 32, registered apart so that `convnet-minilm` (and every
    key made with it) keeps meaning MTT's width 128."""
    from vlbench.plugins import registry
    from vlbench_plugins.convnet_minilm import ConvNetMiniLM

    w32 = registry().get("backbone", "convnetw32-minilm")()
    assert w32.id == "convnetw32-minilm" and ConvNetMiniLM().id == "convnet-minilm"
    assert asdict(w32.config) == asdict(ConvNetMiniLM(width=32).config) and ConvNetMiniLM().config.width == 128
    assert w32.checkpoint_path() == ConvNetMiniLM(width=32).checkpoint_path()  # one architecture, one checkpoint
    model = type(w32)(pretrained=None, lora_rank=0).build(0)
    convs = [block.conv for block in model.image_encoder.convnet.blocks]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 32), (32, 32), (32, 32)]
    assert w32.image_size == 32 and model.image_head.proj.in_features == 32 * 4 * 4


def test_convnetw32_loads_its_shipped_checkpoint(tmp_path, monkeypatch):
    import hashlib

    from safetensors.torch import load_file

    from vlbench_plugins.convnet_minilm import ConvNetW32MiniLM
    from vlbench_plugins.tinyvit_minilm import SHIPPED_WEIGHTS

    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path))  # nothing may be pretrained on the way
    w32 = ConvNetW32MiniLM()
    path = w32.checkpoint_path()
    assert path.parent == SHIPPED_WEIGHTS and w32.weight_files()["image_encoder"] == path
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(CONVNETW32_SHA256)
    shipped = load_file(str(path))
    for backbone in (w32, w32.full_finetuning()):  # under LoRA adapters (tm-lora) and fully trainable (tm)
        encoder = backbone.build(0).image_encoder.convnet
        weights = {n.replace(".base_layer", ""): p for n, p in encoder.state_dict().items() if "lora_" not in n}
        assert weights.keys() == shipped.keys() and all(torch.equal(weights[n], shipped[n]) for n in shipped)
    assert not (tmp_path / "pretrained").exists()


def test_convnet_trains_a_few_steps_to_finite_recall(convnet):
    pairs = toy_pairs(convnet)
    model = convnet.build(0)
    before = {n: p.detach().clone() for n, p in model.trainable_parameters().items()}
    train(model, TrainData.from_pairs(pairs), TrainProtocol(steps=3, batch_size=8, lr=0.1), seed=0)
    assert all(not torch.equal(before[n], p) for n, p in model.trainable_parameters().items() if "lora_A" not in n)
    metrics = evaluate(model, pairs)
    assert all(0 <= v <= 100 for v in metrics.values()) and metrics["mean"] > 0
