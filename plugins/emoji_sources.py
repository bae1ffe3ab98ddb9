"""What the emoji data set is made of: files of Debian packages, read in place, and the glyphs they draw.

Images: three independently designed emoji sets, each drawn by people: Noto Color Emoji (Google,
every emoji up to Emoji 15), EmojiOne 2.2's PNGs (shipped by ruby-gemojione) and Symbola
(George Douros, monochrome, Unicode 9). Text: the Unicode CLDR English annotations (a name and the
keywords people search an emoji by, plus the regional English variants) and EmojiOne's own names,
keywords and short names. Nothing is downloaded; a missing package is a one-line error with the
command that installs it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFont, features

from vlbench.api import VLBenchError

PACKAGES = ("fonts-noto-color-emoji", "fonts-symbola", "ruby-gemojione", "unicode-cldr-core", "libfribidi0")
INSTALL = f"apt-get install -y --no-install-recommends {' '.join(PACKAGES)}"
NOTO = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
SYMBOLA = "usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf"
GEMOJIONE = "usr/share/rubygems-integration/all/gems/gemojione-*"  # the version is part of the directory
CLDR = "usr/share/unicode/cldr/common"
#: CLDR's English locales: en first (every emoji), then the regional variants (only where they differ).
LOCALES = ("en", "en_001", "en_GB", "en_AU", "en_CA", "en_IN")
_INHERITED = "↑↑↑"  # CLDR's marker for "same as the parent locale"
NOTO_SIZE = 109  # the one size of Noto's colour bitmaps (136 x 128)
VARIATION_SELECTOR = "\ufe0f"
PACKAGE_ROOT = Path("/")  # where Debian installs them


def missing_packages_error(what: str) -> VLBenchError:
    return VLBenchError(f"the emoji data set needs {what}: install the Debian packages with `{INSTALL}` "
                        "(or `bash scripts/emoji-packages.sh`)")


@dataclass(frozen=True)
class Sources:
    """The package files, found under `root` (/ on a Debian machine)."""

    noto: Path
    symbola: Path
    gemojione: Path
    cldr: Path

    @classmethod
    def find(cls, root: Path | None = None) -> Sources:
        """Locate every file under `root` (PACKAGE_ROOT); a missing one is a one-line error naming its package
        and the install command."""
        root = Path(root or PACKAGE_ROOT)
        gemojione = sorted(root.glob(GEMOJIONE))
        found = {"noto": root / NOTO, "symbola": root / SYMBOLA,
                 "gemojione": gemojione[-1] if gemojione else root / GEMOJIONE, "cldr": root / CLDR}
        checks = {"fonts-noto-color-emoji": found["noto"], "fonts-symbola": found["symbola"],
                  "ruby-gemojione": found["gemojione"] / "config" / "index.json",
                  "unicode-cldr-core": found["cldr"] / "annotations" / "en.xml"}
        missing = [package for package, path in checks.items() if not path.is_file()]
        if missing:
            raise missing_packages_error(f"{', '.join(missing)} (not found under {root})")
        if not features.check("raqm"):  # emoji sequences (flags, skin tones, families) are ligatures
            raise missing_packages_error("Pillow's text layout (raqm, which loads libfribidi0)")
        return cls(**found)

    def files(self) -> list[Path]:
        """Every file the data set is made from (its digests go into the annotation file)."""
        cldr = [self.cldr / kind / f"{locale}.xml" for kind in ("annotations", "annotationsDerived")
                for locale in LOCALES]
        return [self.noto, self.symbola, self.gemojione / "config" / "index.json", *filter(Path.is_file, cldr)]

    def digests(self) -> dict[str, str]:
        return {f"{path.parent.name}/{path.name}": hashlib.sha256(path.read_bytes()).hexdigest()
                for path in self.files()}


# ----------------------------------------------------------------------------- text


def cldr_annotations(sources: Sources) -> dict[str, dict[str, dict[str, str]]]:
    """{emoji: {locale: {"tts": name, "keywords": "a | b | c"}}}, in the order of CLDR's en files.

    Emoji are keyed without variation selectors (CLDR writes most of them so already)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for kind in ("annotations", "annotationsDerived"):
        for locale in LOCALES:
            path = sources.cldr / kind / f"{locale}.xml"
            if not path.is_file():
                continue
            for node in ET.parse(path).getroot().iter("annotation"):
                text = (node.text or "").strip()
                if text and text != _INHERITED:
                    key = node.get("cp").replace(VARIATION_SELECTOR, "")
                    field = "tts" if node.get("type") == "tts" else "keywords"
                    out.setdefault(key, {}).setdefault(locale, {})[field] = text
    return out


def emojione_index(sources: Sources) -> dict[str, dict]:
    """EmojiOne's entries keyed by emoji (without variation selectors): name, keywords, shortname, png."""
    index = json.loads((sources.gemojione / "config" / "index.json").read_text())
    return {entry["moji"].replace(VARIATION_SELECTOR, ""): entry for entry in index.values()}


# ----------------------------------------------------------------------------- images


def fit(rgba: Image.Image, size: int) -> Image.Image:
    """The glyph cropped to its ink, scaled to fit `size` - 2 pixels and centred on white: RGB size x size.

    One rule for every set, so that the three designs differ in how they draw, not in how large."""
    box = rgba.getchannel("A").getbbox()
    glyph = rgba.crop(box)
    scale = (size - 2) / max(glyph.size)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
                         Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(glyph, ((size - glyph.width) // 2, (size - glyph.height) // 2))
    return canvas.convert("RGB")


class Renderers:
    """Each emoji set as a function emoji -> RGBA glyph, or None where that set has no drawing of it."""

    def __init__(self, sources: Sources):
        self.sources = sources
        self.emojione = emojione_index(sources)

    @functools.cached_property
    def _noto(self) -> ImageFont.FreeTypeFont:
        return ImageFont.truetype(str(self.sources.noto), NOTO_SIZE, layout_engine=ImageFont.Layout.RAQM)

    @functools.cached_property
    def _symbola(self) -> ImageFont.FreeTypeFont:
        return ImageFont.truetype(str(self.sources.symbola), 96, layout_engine=ImageFont.Layout.BASIC)

    def _symbola_ink(self, character: str) -> Image.Image:
        ink = Image.new("L", (160, 160))  # room for the widest glyphs at 96 px
        ImageDraw.Draw(ink).text((80, 80), character, font=self._symbola, fill=255, anchor="mm")
        return ink

    @functools.cached_property
    def _symbola_missing(self) -> bytes:
        return self._symbola_ink("\U0010ffff").tobytes()  # its "no glyph" box

    def noto(self, emoji: str) -> Image.Image | None:
        # One colour glyph is exactly 136 x 128; a sequence the font lacks lays out as several glyphs,
        # a code point it lacks as an empty box.
        if self._noto.getbbox(emoji) != (0, 0, 136, 128):
            return None
        image = Image.new("RGBA", (136, 128))
        ImageDraw.Draw(image).text((0, 0), emoji, font=self._noto, embedded_color=True)
        return image if image.getchannel("A").getbbox() else None

    def emojione_art(self, emoji: str) -> Image.Image | None:
        entry = self.emojione.get(emoji)
        if entry is None:
            return None
        with Image.open(self.sources.gemojione / "assets" / "png" / f"{entry['unicode'].upper()}.png") as im:
            return im.convert("RGBA")

    def symbola(self, emoji: str) -> Image.Image | None:
        if len(emoji) != 1:  # no sequences: basic layout, and Symbola predates them
            return None
        ink = self._symbola_ink(emoji)
        if ink.getbbox() is None or ink.tobytes() == self._symbola_missing:
            return None
        glyph = Image.new("RGBA", ink.size, (0, 0, 0, 0))  # black ink
        glyph.putalpha(ink)
        return glyph

    def all(self) -> dict[str, Callable[[str], Image.Image | None]]:
        """Name -> renderer, in a fixed order (the first one has every emoji of the set)."""
        return {"noto": self.noto, "emojione": self.emojione_art, "symbola": self.symbola}
