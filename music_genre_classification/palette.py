"""One colour per genre, the same in every picture: the library map (PNG and HTML), the web page, the plots.

The ten GTZAN genres have fixed colours (Tableau 10); other genres (a collection of one's own) take the colours
left, then the palette again, in the order of their sorted names, so that a set of genres always gets the same
colours whichever command draws them.
"""

from collections.abc import Iterable

from music_genre_classification import GTZAN_GENRES

# Tableau 10, then two more for the 11th and 12th genre of a collection
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f3a5f",
    "#8cd17d",
)
GTZAN_COLOURS = dict(zip(GTZAN_GENRES, PALETTE))


def genre_colours(genres: Iterable[str]) -> dict[str, str]:
    """genre -> "#rrggbb" for a set of genres: a GTZAN genre its fixed colour, any other the next one free."""
    wanted = sorted(set(genres))
    colours = {g: GTZAN_COLOURS[g] for g in wanted if g in GTZAN_COLOURS}
    free = [c for c in PALETTE if c not in colours.values()]
    others = [g for g in wanted if g not in colours]
    for k, genre in enumerate(others):
        colours[genre] = free[k] if k < len(free) else PALETTE[k % len(PALETTE)]
    return colours
