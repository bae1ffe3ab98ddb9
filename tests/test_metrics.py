import math

import pytest
import torch

from vlbench.metrics import METRIC_KEYS, retrieval_metrics, summarize

# Three images, five captions each (caption j belongs to image j // 5). With image embeddings
# e_0, e_1, e_2 a caption's embedding row is directly its scores against images 0, 1, 2.
TOY_SCORES = [
    [0.9, 0.1, 0.0],  # image 0: IR hit
    [0.2, 0.5, 0.1],  # image 0: miss
    [0.3, 0.6, 0.4],  # image 0: miss
    [0.1, 0.0, 0.0],  # image 0: hit
    [0.0, 0.45, 0.3],  # image 0: miss
    [0.8, 0.3, 0.1],  # image 1: miss
    [0.7, 0.2, 0.0],  # image 1: miss
    [0.6, 0.1, 0.5],  # image 1: miss
    [0.0, 0.4, 0.2],  # image 1: hit
    [0.5, 0.35, 0.0],  # image 1: miss
    [0.0, 0.0, 0.6],  # image 2: hit
    [0.1, 0.0, 0.7],  # image 2: hit
    [0.0, 0.9, 0.2],  # image 2: miss
    [0.2, 0.1, 0.55],  # image 2: hit
    [0.3, 0.5, 0.1],  # image 2: miss
]


def test_toy_case_by_hand():
    m = retrieval_metrics(torch.eye(3), torch.tensor(TOY_SCORES), torch.arange(3).repeat_interleave(5))
    # TR. Image 0: best own caption 0.9, no wrong caption >= 0.9 -> rank 0.
    # Image 1: best own 0.4 (caption 8); wrong captions 1, 2, 4, 12, 14 score more -> rank 5.
    # Image 2: best own 0.7 (caption 11); the best wrong caption scores 0.5 -> rank 0.
    assert m["tr@1"] == pytest.approx(200 / 3)
    assert m["tr@5"] == pytest.approx(200 / 3)
    assert m["tr@10"] == pytest.approx(100)
    # IR: captions 0, 3, 8, 10, 11, 13 rank their own image first; with 3 images, K >= 5 always hits.
    assert m["ir@1"] == pytest.approx(40)
    assert m["ir@5"] == m["ir@10"] == pytest.approx(100)
    assert m["mean"] == pytest.approx((200 / 3 + 200 / 3 + 100 + 40 + 100 + 100) / 6)
    assert tuple(m) == METRIC_KEYS


def test_any_caption_counts_for_image_to_text():
    # 4 images, 5 captions each; only the 3rd caption of image i matches it (score 1), the
    # other four point weakly (0.5) at the next image and score 0 with their own.
    images = torch.eye(4)
    text = torch.zeros(20, 4)
    for i in range(4):
        for k in range(5):
            text[5 * i + k] = images[i] if k == 2 else 0.5 * images[(i + 1) % 4]
    m = retrieval_metrics(images, text, torch.arange(4).repeat_interleave(5))
    assert m["tr@1"] == 100  # the 3rd caption is enough
    # Only the 4 matching captions hit at 1; the other 16 have their image behind all 3 others
    # (one scores 0.5, two tie at 0 and count as ahead), so rank 3: a hit at 5.
    assert m["ir@1"] == pytest.approx(20)
    assert m["ir@5"] == 100


def test_ties_count_pessimistically():
    # A constant model: every score is equal, so every wrong item ranks ahead of the right one.
    n_img = 20
    m = retrieval_metrics(torch.ones(n_img, 4), torch.ones(5 * n_img, 4), torch.arange(n_img).repeat_interleave(5))
    assert all(m[k] == 0 for k in METRIC_KEYS)

    # Caption 0 scores 0.5 with both images: image 1 ranks ahead of its own image 0. Image 0
    # scores 0.5 with both captions: caption 1 (wrong) ranks ahead. Each is a miss at 1 only.
    m = retrieval_metrics(torch.eye(2), torch.tensor([[0.5, 0.5], [0.5, 1.0]]), torch.tensor([0, 1]))
    assert (m["ir@1"], m["tr@1"]) == (50, 50)
    assert (m["ir@5"], m["tr@5"]) == (100, 100)


def test_nan_embeddings_score_zero():
    n_img = 20
    image = torch.full((n_img, 4), float("nan"))
    m = retrieval_metrics(image, torch.ones(5 * n_img, 4), torch.arange(n_img).repeat_interleave(5))
    assert all(m[k] == 0 for k in METRIC_KEYS)


def reference_metrics(image, text, text_to_image):
    """Brute force: full score matrix, explicit loops, pessimistic ties."""
    scores = (image @ text.T).tolist()
    owner = text_to_image.tolist()
    tr_ranks, ir_ranks = [], []
    for i, row in enumerate(scores):
        best = max(s for j, s in enumerate(row) if owner[j] == i)
        tr_ranks.append(sum(1 for j, s in enumerate(row) if owner[j] != i and s >= best))
    for j, own in enumerate(owner):
        column = [scores[i][j] for i in range(len(scores))]
        ir_ranks.append(sum(1 for i, s in enumerate(column) if i != own and s >= column[own]))
    out = {}
    for prefix, ranks in (("tr", tr_ranks), ("ir", ir_ranks)):
        for k in (1, 5, 10):
            out[f"{prefix}@{k}"] = 100 * sum(r < k for r in ranks) / len(ranks)
    out["mean"] = sum(out.values()) / 6
    return out


@pytest.mark.parametrize("quantized", [False, True])
def test_matches_brute_force_for_any_chunk_size(quantized):
    g = torch.Generator().manual_seed(0)
    n_img = 37
    counts = torch.randint(1, 7, (n_img,), generator=g)  # 1 to 6 captions per image
    text_to_image = torch.arange(n_img).repeat_interleave(counts)
    text_to_image = text_to_image[torch.randperm(len(text_to_image), generator=g)]  # captions shuffled
    if quantized:  # small integers: exact scores and many ties
        image = torch.randint(-2, 3, (n_img, 6), generator=g).float()
        text = image[text_to_image] + torch.randint(-2, 3, (len(text_to_image), 6), generator=g)
    else:
        image = torch.nn.functional.normalize(torch.randn(n_img, 16, generator=g), dim=1)
        text = torch.nn.functional.normalize(image[text_to_image] + torch.randn(len(text_to_image), 16, generator=g), dim=1)

    expected = reference_metrics(image, text, text_to_image)
    assert 0 < expected["ir@1"] < 100 and 0 < expected["tr@1"] < 100  # a case that discriminates
    for chunk_size in (1, 3, 7, 1000, None):
        got = retrieval_metrics(image, text, text_to_image, chunk_size=chunk_size)
        assert got == pytest.approx(expected, abs=1e-9), chunk_size


def test_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_metrics(torch.eye(3), torch.eye(3)[:2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(torch.eye(2), torch.eye(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="one D"):
        retrieval_metrics(torch.eye(2), torch.ones(2, 3), torch.tensor([0, 1]))


def test_summarize_uses_population_std():
    a = {k: 1.0 for k in METRIC_KEYS}
    b = {k: 3.0 for k in METRIC_KEYS}
    s = summarize([a, b])
    assert s["mean"] == {k: 2.0 for k in METRIC_KEYS}
    assert s["std"] == {k: 1.0 for k in METRIC_KEYS}  # ddof=1 would give sqrt(2)

    one = summarize([{"tr@1": 5.0}])
    assert one == {"mean": {"tr@1": 5.0}, "std": {"tr@1": 0.0}}
    assert math.isclose(summarize([{"x": 1.0}, {"x": 2.0}, {"x": 6.0}])["std"]["x"], math.sqrt(14 / 3))

    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([{"tr@1": 1.0}, {"ir@1": 1.0}])
