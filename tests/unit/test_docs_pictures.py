"""The pictures in the docs draw each genre in the toolkit's palette, as the commands do: when the palette changes,
the library map and the web page's screenshot must be made again."""

import matplotlib.image
import numpy as np
import pytest
from helpers.processes import REPO

from music_genre_classification.palette import GTZAN_COLOURS


def drawn_colours(path) -> np.ndarray:
    pixels = matplotlib.image.imread(path)[..., :3].reshape(-1, 3)
    return np.unique(np.round(pixels * 255).astype(int), axis=0)


@pytest.mark.parametrize(("picture", "tolerance"), [("library_map.png", 0), ("web_page.png", 12)])
def test_every_genre_is_drawn_in_its_palette_colour(picture, tolerance):
    """The map's legend shows each colour as it is; the screenshot's smallest bars are antialiased, so near enough."""
    colours = drawn_colours(REPO / "docs" / picture)
    for genre, colour in GTZAN_COLOURS.items():
        rgb = np.array([int(colour[k : k + 2], 16) for k in (1, 3, 5)])
        assert np.abs(colours - rgb).sum(axis=1).min() <= tolerance, f"{picture}: {genre} is not drawn in {colour}"
