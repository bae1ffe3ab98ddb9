"""`vlbench show`: whole captions, a title, gaps between cells, the picture next to the record."""
import argparse
import dataclasses
import json

import pytest
import torch
from PIL import Image, ImageFont

from vlbench.cli.show import CELL, FONT_SIZE, GAP, LINE, add_show_command, nearest_captions, pair_captions, title, wrap, write_grid

# A three-object scene's caption: longer than the four lines the grid used to cut it at.
LONG = ("a large red circle at the top left, a small green square in the middle and "
        "a large blue triangle at the bottom right of the picture, on a grey background")
NORMALIZATION = ((0.5,) * 3, (0.5,) * 3)  # tinyvit-minilm's


def test_wrap_keeps_every_word_and_fits_the_cell():
    font = ImageFont.load_default(FONT_SIZE)
    lines = wrap(LONG, font, CELL)
    assert len(lines) > 4 and " ".join(lines) == LONG  # nothing cut, spaces kept
    assert all(font.getlength(line) <= CELL for line in lines)
    assert "".join(wrap("x" * 60, font, CELL)) == "x" * 60  # a word wider than the cell is broken


def ink_rows(image, x0, x1):
    """The y coordinates where the columns x0..x1 hold anything but white."""
    pixels = image.load()
    return [y for y in range(image.height) if any(pixels[x, y] != (255, 255, 255) for x in range(x0, x1))]


def test_grid_shows_title_gaps_and_whole_captions(tmp_path):
    images = torch.full((3, 3, 8, 8), 0.5)  # grey canonical pixels
    out = write_grid(images, [LONG, "short", "a small caption"], tmp_path / "g.png", "tm · 3 pairs", 3)
    image = Image.open(out).convert("RGB")
    lines = len(wrap(LONG, ImageFont.load_default(FONT_SIZE), CELL))
    top = GAP + 15 + 2 * GAP  # the title line
    assert image.size == (GAP + 3 * (CELL + GAP), top + CELL + 4 + lines * LINE + GAP)
    assert ink_rows(image, GAP, GAP + 100)[0] < top  # the title is drawn
    assert ink_rows(image, GAP + CELL, GAP + CELL + GAP) == []  # a white gap between the first two cells
    caption_ink = [y for y in ink_rows(image, GAP, GAP + CELL) if y > top + CELL]
    assert caption_ink[-1] > top + CELL + 4 + (lines - 1) * LINE  # the last line of the long caption is there


def test_title_names_what_made_the_set():
    assert title("tm-lora", 100, "tinyvit-minilm", "synthscenes", "ab12-2026", 100) == \
        "tm-lora · 100 pairs · backbone tinyvit-minilm · synthscenes · record ab12-2026"
    assert title("random", 500, "clip", "coco", None, 100).endswith("coco · first 100 shown")


def show(argv):
    parser = argparse.ArgumentParser()
    add_show_command(parser.add_subparsers())
    args = parser.parse_args(["show", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small synthscenes data set, its training pairs, and a saved 3-pair coreset."""
    from vlbench.api import CondensedSet
    from vlbench.data.synthscenes import SynthScenes, generate
    from vlbench.data.pairs import load_pairs
    from vlbench.plugins import registry

    tmp = tmp_path_factory.mktemp("show")
    generate(tmp / "data", 0, train=12, val=0, test=2, pretrain=0)
    backbone = registry().get("backbone", "tinyvit-minilm")(pretrained=None)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("VLBENCH_CACHE", str(tmp / "cache"))
        train = load_pairs(SynthScenes().load(tmp / "data"), "train", backbone)
    condensed = CondensedSet.from_indices(train, [7, 2, 9], condenser="random")
    condensed.to_canonical(backbone.normalization).save(tmp / "cache" / "condensed" / "random-3-abcdef")  # as the runner saves
    return tmp, train, condensed


def test_coreset_shows_its_own_captions_a_learned_set_the_nearest(tiny):
    _, train, condensed = tiny

    def no_features():
        raise AssertionError("a coreset's captions need no text encoder")

    assert pair_captions(condensed, train.captions, no_features, 2) == [train.captions[7], train.captions[2]]
    learned = dataclasses.replace(condensed, text_features=train.text_features[[3, 7, 0]] * 2, source_indices=None)
    assert pair_captions(learned, train.captions, lambda: train.text_features, 2) == [train.captions[3], train.captions[7]]
    assert nearest_captions(train.text_features[[7]], train.text_features, train.captions) == [train.captions[7]]


def test_show_a_record_writes_next_to_it_and_a_set_into_the_working_directory(tiny, monkeypatch, capsys, tmp_path):
    tmp, _, _ = tiny
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp / "cache"))
    record = {"run_id": "r1", "condenser": {"name": "random"}, "budget": 3,
              "spec": {"dataset": "synthscenes", "data_root": str(tmp / "data"), "backbone": "tinyvit-minilm",
                       "backbone_options": {"pretrained": None}},
              "condensed": {"path": "$VLBENCH_CACHE/condensed/random-3-abcdef"}}
    path = tmp_path / "runs" / "records" / "r1.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    assert show([str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'runs' / 'records' / 'r1.png'}"
    assert Image.open(tmp_path / "runs" / "records" / "r1.png").width == GAP + 3 * (CELL + GAP)

    monkeypatch.chdir(tmp_path)
    show([str(tmp / "cache" / "condensed" / "random-3-abcdef"), "--data-root", str(tmp / "data"), "--columns", "2"])
    assert (tmp_path / "random-3-abcdef.png").exists()
    assert not list((tmp / "cache").rglob("*.png"))  # nothing written into the cache


COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.4, 0.6]])  # canonical RGB of the two images below


def cell_colours(path):
    """The RGB of the centre of each of the first two cells of a one-row grid with a title."""
    image = Image.open(path).convert("RGB")
    y = GAP + 15 + 2 * GAP + CELL // 2
    return [image.getpixel((GAP + k * (CELL + GAP) + CELL // 2, y)) for k in range(2)]


def test_show_draws_canonical_pixels_whatever_the_backbone_and_migrates_a_format_1_set(tiny, monkeypatch, tmp_path):
    from vlbench.api import CondensedSet
    from vlbench.pixels import for_backbone

    tmp, train, _ = tiny
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp / "cache"))
    canonical = COLOURS.view(2, 3, 1, 1).expand(2, 3, 36, 36).contiguous()
    text, indices = train.text_features[:2].clone(), torch.tensor([0, 1])
    CondensedSet(canonical, text, source_indices=indices, canonical=True).save(tmp_path / "set")
    expected = [tuple(round(255 * v) for v in c.tolist()) for c in COLOURS]
    for backbone in ("tinyvit-minilm", "nfnet-bert"):  # the backbone's normalisation plays no part
        out = tmp_path / f"{backbone}.png"
        show([str(tmp_path / "set"), "--data-root", str(tmp / "data"), "--backbone", backbone, "--output", str(out)])
        assert cell_colours(out) == expected

    # A set saved before canonical pixels: no "format" or "pixels" in its manifest, images in its backbone's space.
    legacy = tmp_path / "legacy"
    CondensedSet(for_backbone(canonical, 36, NORMALIZATION), text, source_indices=indices).save(legacy)
    manifest = json.loads((legacy / "manifest.json").read_text())
    del manifest["format"], manifest["pixels"]
    (legacy / "manifest.json").write_text(json.dumps(manifest))
    show([str(legacy), "--data-root", str(tmp / "data"), "--output", str(tmp_path / "legacy.png")])
    assert cell_colours(tmp_path / "legacy.png") == expected
