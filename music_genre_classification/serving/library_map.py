"""`map`: a 2-D map of a library's embeddings (t-SNE, or UMAP), as a PNG and an interactive HTML page.

Points are coloured by the genre their folder names (`label`) when the tracks have one, else by predicted genre;
hovering a point of the HTML page shows its file, predicted genre and label. plotly.js is inside the page (no CDN).
"""

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from music_genre_classification.config import UserError
from music_genre_classification.data.folder import check_writable
from music_genre_classification.palette import genre_colours
from music_genre_classification.serving.library import Library, read_library
from music_genre_classification.serving.similar import normalised

METHODS = ("tsne", "umap")
HOVER = "%{customdata[0]}<br>predicted: %{customdata[1]}<br>label: %{customdata[2]}<extra></extra>"


def layout(embeddings: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """[tracks, dim] -> [tracks, 2], cosine geometry (unit-length embeddings), first projected on 50 PCA axes."""
    from sklearn.decomposition import PCA

    points = normalised(embeddings)
    if len(points) < 4:
        raise UserError(f"a map needs at least 4 embedded tracks, not {len(points)}")
    if points.shape[1] > 50 and len(points) > 50:  # t-SNE and UMAP go much faster on 50 dims, and lose little
        points = PCA(50, random_state=seed).fit_transform(points)
    if method == "umap":
        try:
            from umap import UMAP
        except ImportError:
            raise UserError(
                "--method umap needs umap-learn: pip install 'music-genre-classification[library]'"
            ) from None
        umap = UMAP(n_neighbors=min(15, len(points) - 1), random_state=seed, n_jobs=1)  # seeded: one thread anyway
        return umap.fit_transform(points)
    from sklearn.manifold import TSNE

    return TSNE(2, perplexity=min(30.0, (len(points) - 1) / 3), init="pca", random_state=seed).fit_transform(points)


@contextmanager
def ticking(what: str) -> Iterator[None]:
    """`what: 12s` on stderr, its time ticking each second while the block runs: t-SNE and UMAP report no steps of
    their own, and a big library (or UMAP's first, compiling run) takes a minute."""
    from tqdm import tqdm

    line = tqdm(desc=what, bar_format="{desc}: {elapsed}", file=sys.stderr, mininterval=0.5)
    done = threading.Event()

    def tick() -> None:
        while not done.wait(1.0):
            line.refresh()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        line.close()


def colours(library: Library) -> tuple[list[str], str]:
    """Each track's colour group and what it is: the folders' genres when every track has one, else predictions."""
    if all(library.labels):
        return library.labels, "genre (folder)"
    return library.genres, "predicted genre"


def write_png(xy: np.ndarray, groups: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    size = max(2.0, min(20.0, 4000 / len(xy)))
    for group, colour in genre_colours(groups).items():
        mask = np.array([g == group for g in groups])
        ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=colour, label=group, alpha=0.8, linewidths=0)
    ax.set(title=title, xticks=[], yticks=[])
    legend = ax.legend(markerscale=max(1.0, 20 / size) ** 0.5, fontsize=8, loc="best", frameon=False)
    for handle in legend.legend_handles:  # the legend shows each genre's colour as it is, not faded
        handle.set_alpha(1.0)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def write_html(xy: np.ndarray, library: Library, groups: list[str], title: str, path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for group, colour in genre_colours(groups).items():
        chosen = [i for i, g in enumerate(groups) if g == group]
        fig.add_trace(
            go.Scattergl(
                x=xy[chosen, 0],
                y=xy[chosen, 1],
                mode="markers",
                name=group,
                marker={"size": 6, "color": colour},
                customdata=[[library.paths[i], library.genres[i], library.labels[i] or "-"] for i in chosen],
                hovertemplate=HOVER,
            )
        )
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False}, template="plotly_white")
    fig.write_html(path, include_plotlyjs=True)  # plotly.js inside: the page works offline


def run_map(index: str, output_path: str, method: str = "tsne") -> list[Path]:
    """A 2-D map of a library table made by `embed` (--method tsne or umap): <output>.png and interactive .html.

    The `map` command; returns the paths of the .html page and the .png written."""
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    output = Path(output_path)
    if output.suffix not in (".html", ".png"):
        raise UserError(f"{output}: the map is written as .html and .png; name one of them")
    html, png = output.with_suffix(".html"), output.with_suffix(".png")
    for path in (html, png):
        check_writable(path)
    library = read_library(Path(index))
    name = {"tsne": "t-SNE", "umap": "UMAP"}[method]
    with ticking(f"map: laying out {len(library)} tracks with {name}"):
        xy = layout(library.embeddings, method)
    groups, what = colours(library)
    title = f"{len(library)} tracks of {Path(index).name}, {name} of the embeddings, colour: {what}"
    write_png(xy, groups, title, png)
    write_html(xy, library, groups, title, html)
    print(f"map of {len(library)} tracks ({method}) -> {html}, {png}")
    return [html, png]
