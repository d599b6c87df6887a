"""How close musicnn's embeddings from a stored spectrogram come to those from the real audio, through the fixed
adapter and through the learned one, on clips of artists the learned adapter never saw.

The clips of data/dataset with both audio and a spectrogram are cut into artist-disjoint folds; for each fold a
learned adapter is trained on the other folds (training/musicnn_adapter.py) and every held-back clip is run through
the MSD backbone three ways: from its audio, from its spectrogram through the fixed adapter and through the learned
one (the same 3-s patches of the part of the clip that has audio). Reported per clip and averaged: the centred cosine
of the clip's embeddings (penultimate, mean-pool, max-pool; centred on the mean audio embedding of all the clips) and
whether the top MSD tag agrees, and how many of the top 5 do.

python -m studies.musicnn_adapter [--folds 4] [--mel_steps 300] [--steps 120] [--output docs/results/musicnn_adapter.md]
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import fire
import numpy as np
import torch

from music_genre_classification.data.split import folds_of, read_artists, read_list
from music_genre_classification.models.musicnn import MSD_TAGS, load_musicnn
from music_genre_classification.models.musicnn_adapter import save_learned_adapter, spectrogram_to_musicnn_mel
from music_genre_classification.training.musicnn_adapter import (
    MEL_STEPS,
    OUTPUTS,
    STEPS,
    AdapterPair,
    adapter_pairs,
    add_audio_outputs,
    centred_cosine,
    network_outputs,
    patches_of,
    train_learned_adapter,
)
from studies.results import Results


@dataclass(frozen=True)
class Plan:
    """What both parts of the study share: the data, its artist-disjoint folds and how the adapters are trained."""

    folds: int = 4
    mel_steps: int = MEL_STEPS
    steps: int = STEPS
    seed: int = 0
    root: str = "data/dataset"
    max_folds: int | None = None  # the first folds only (a quick run)


def pooled(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-patch outputs -> the clip's, as MusicnnBackbone pools them."""
    return {
        "penultimate": outputs["penultimate"].mean(0),
        "mean_pool": outputs["mean_pool"].mean(0),
        "max_pool": outputs["max_pool"].amax(0),
        "tags": torch.sigmoid(outputs["logits"]).mean(0),
    }


def agreement(route: dict[str, torch.Tensor], audio: dict[str, torch.Tensor], centre: dict) -> dict[str, float]:
    row = {name: float(centred_cosine(route[name], audio[name], centre[name])) for name in OUTPUTS}
    top_route, top_audio = route["tags"].topk(5).indices.tolist(), audio["tags"].topk(5).indices.tolist()
    row["top1"] = float(top_route[0] == top_audio[0])
    row["top5"] = len(set(top_route) & set(top_audio)) / 5
    row["route_top1"] = MSD_TAGS[top_route[0]]
    row["route"], row["audio"] = route, audio  # for the cosines centred on each route's own mean
    return row


def own_centre_cosines(rows: list[dict]) -> list[str]:
    """The mean cosine when each route is centred on its own mean over these clips: how well the clip-to-clip
    differences survive, whatever constant shift the route adds (a standardising probe ignores that shift)."""
    cells = []
    for name in OUTPUTS:
        route = torch.stack([r["route"][name] for r in rows])
        audio = torch.stack([r["audio"][name] for r in rows])
        cosines = torch.nn.functional.cosine_similarity(route - route.mean(0), audio - audio.mean(0), dim=-1)
        cells.append(f"{float(cosines.mean()):.3f}")
    return cells


def summary(rows: list[dict]) -> list[str]:
    cells = [f"{np.mean([r[n] for r in rows]):.3f}" for n in OUTPUTS]
    cells.append(f"{int(sum(r['top1'] for r in rows))} / {len(rows)}")
    cells.append(f"{np.mean([r['top5'] for r in rows]):.2f}")
    return cells


def run(plan: Plan) -> tuple[list[AdapterPair], dict[str, list[dict]], dict]:
    backbone = load_musicnn("msd")
    start = time.time()
    pairs = adapter_pairs(plan.root)
    add_audio_outputs(pairs, backbone)
    print(
        f"{len(pairs)} clips with audio and a spectrogram ({sum(p.full for p in pairs)} whole), "
        f"{sum(len(p.starts) for p in pairs)} patches; prepared in {time.time() - start:.0f} s"
    )
    audio = {p.clip: pooled(p.audio_outputs) for p in pairs}
    centre = {name: torch.stack([audio[c][name] for c in audio]).mean(0) for name in OUTPUTS}
    fold_of = folds_of({p.clip: p.genre for p in pairs}, read_artists("GTZANindex.txt"), plan.folds, plan.seed)
    variants = ["fixed", "learned", "learned, log-mel loss only"]
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    for pair in pairs:
        outputs = network_outputs(backbone, patches_of(pair.fixed, pair.starts))
        rows["fixed"].append(
            {"clip": pair.clip, "full": pair.full, "fold": fold_of[pair.clip]}
            | agreement(pooled(outputs), audio[pair.clip], centre)
        )
    for fold in range(plan.folds if plan.max_folds is None else min(plan.max_folds, plan.folds)):
        train = [p for p in pairs if fold_of[p.clip] != fold]
        held = [p for p in pairs if fold_of[p.clip] == fold]
        start = time.time()
        mel_model, learned = train_learned_adapter(train, backbone, plan.mel_steps, plan.steps, plan.seed)
        trained = time.time() - start
        for variant, model in (("learned", learned), ("learned, log-mel loss only", mel_model)):
            with torch.no_grad():
                for pair in held:
                    outputs = network_outputs(backbone, patches_of(model(pair.fixed), pair.starts))
                    rows[variant].append(
                        {"clip": pair.clip, "full": pair.full, "fold": fold}
                        | agreement(pooled(outputs), audio[pair.clip], centre)
                    )
            done = rows[variant][-len(held) :]
            fixed = [r for r in rows["fixed"] if r["fold"] == fold]
            print(
                f"fold {fold}: {len(train)} clips trained in {trained:.0f} s, {len(held)} held back; "
                f"{variant}: {' '.join(summary(done))} (fixed: {' '.join(summary(fixed))})",
                flush=True,
            )
    scored = {r["clip"] for r in rows[variants[1]]}
    rows["fixed"] = [r for r in rows["fixed"] if r["clip"] in scored]
    return pairs, rows, fold_of


def probe_comparison(results: Results, plan: Plan, max_patches: int = 3, save_adapter: str | None = None) -> None:
    """A logistic regression on the pooled MSD embeddings of the train list's spectrograms, through the fixed and
    through a learned adapter trained on the train list's clips with audio only; artist-disjoint folds of the train
    list, each fold's clips scored by a probe of the other folds, the clips the adapter saw excluded from the scores.
    The test part is never read."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds, backbone, root_path = plan.folds, load_musicnn("msd"), Path(plan.root)
    start = time.time()
    adapter_clips = adapter_pairs(plan.root, only="train_filtered.txt")
    _, adapter = train_learned_adapter(adapter_clips, backbone, plan.mel_steps, plan.steps, plan.seed)
    seen = {p.clip for p in adapter_clips}
    if save_adapter:
        meta = {"clips": str(len(seen)), "only": "train_filtered.txt", "mel_steps": str(plan.mel_steps)}
        save_learned_adapter(adapter, save_adapter, meta | {"steps": str(plan.steps), "seed": str(plan.seed)})
    print(f"probe: adapter trained on the {len(seen)} train-list clips with audio in {time.time() - start:.0f} s")
    params = json.loads((root_path / "spectrograms" / "params.json").read_text())
    clips = [c.removesuffix(".wav") for c in read_list("train_filtered.txt")]
    clips = [c for c in clips if (root_path / "spectrograms" / f"{c}.npy").is_file()]
    features: dict[str, dict[str, list]] = {"fixed": {}, "learned": {}}
    start = time.time()
    with torch.inference_mode():
        for clip in clips:
            fixed = torch.from_numpy(
                spectrogram_to_musicnn_mel(np.load(root_path / "spectrograms" / f"{clip}.npy"), params)
            )
            for route, mel in (("fixed", fixed), ("learned", adapter(fixed))):
                out = backbone.from_mel(mel, max_patches=max_patches)
                for name in OUTPUTS:
                    features[route].setdefault(name, []).append(getattr(out, name).numpy())
    print(f"probe: {len(clips)} train-list clips embedded ({max_patches} patches each) in {time.time() - start:.0f} s")
    genres = np.array([c.split("/")[0] for c in clips])
    fold_of = folds_of(dict(zip(clips, genres)), read_artists("GTZANindex.txt"), folds, plan.seed)
    fold = np.array([fold_of[c] for c in clips])
    scored = np.array([c not in seen for c in clips])
    rows = []
    for name in OUTPUTS:
        row = [name]
        for route in ("fixed", "learned"):
            x = np.stack(features[route][name])
            right = []
            for k in range(folds):
                probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
                probe.fit(x[fold != k], genres[fold != k])
                keep = (fold == k) & scored
                right += list(probe.predict(x[keep]) == genres[keep])
            row.append(f"{np.mean(right):.3f}")
        rows.append(row)
        print(f"probe on {name}: fixed {row[1]}, learned {row[2]} ({int(scored.sum())} clips scored)")
    results.table(
        f"A logistic-regression probe (standardised, C = 0.1) on the backbone's pooled embeddings of the train "
        f"list's spectrograms ({max_patches} patches per clip), artist-disjoint {folds}-fold accuracy over "
        f"{int(scored.sum())} clips (the {len(seen)} clips the adapter trained on are not scored)",
        ["embedding", "fixed adapter", "learned adapter"],
        rows,
    )


def fold_study(results: Results, plan: Plan) -> None:
    pairs, rows, fold_of = run(plan)
    header = ["adapter", "clips", "penultimate", "mean-pool", "max-pool", "top tag agrees", "top-5 overlap"]
    for caption, keep in (
        ("Held-back clips (out of fold), all", lambda r: True),
        ("Held-back clips whose audio holds the whole 30 s", lambda r: r["full"]),
    ):
        table = []
        for variant, variant_rows in rows.items():
            kept = [r for r in variant_rows if keep(r)]
            table.append([variant, len(kept), *summary(kept)])
        results.table(
            f"{caption}: mean cosine to the audio's embeddings, both centred on the mean audio embedding of the "
            "99 clips; MSD tags",
            header,
            table,
        )
        own = [
            [variant, len(kept), *own_centre_cosines(kept)]
            for variant, kept in ((v, [r for r in vr if keep(r)]) for v, vr in rows.items())
        ]
        results.table(
            f"{caption}: mean cosine to the audio's embeddings, each route centred on its own mean over these clips",
            header[:5],
            own,
        )
        table = [line + own_line[2:] for line, own_line in zip(table, own)]
        print(caption, "(then the cosines centred on each route's own mean)")
        for line in table:
            print("  ", " | ".join(str(c) for c in line))
    fold_rows = []
    for fold in sorted({r["fold"] for r in rows["learned"]}):
        for variant, variant_rows in rows.items():
            kept = [r for r in variant_rows if r["fold"] == fold]
            fold_rows.append([fold, variant, len(kept), *summary(kept)])
    results.table("Per fold (held-back artists)", ["fold", *header], fold_rows)
    audio_tops: dict[str, int] = {}
    for pair in pairs:
        tag = MSD_TAGS[int(torch.sigmoid(pair.audio_outputs["logits"]).mean(0).argmax())]
        audio_tops[tag] = audio_tops.get(tag, 0) + 1
    common = ", ".join(f"{tag} {n}" for tag, n in sorted(audio_tops.items(), key=lambda t: -t[1])[:8])
    print(f"top tags from the audio: {common}")
    for variant, variant_rows in rows.items():
        tops = {}
        for r in variant_rows:
            tops[r["route_top1"]] = tops.get(r["route_top1"], 0) + 1
        common = ", ".join(f"{tag} {n}" for tag, n in sorted(tops.items(), key=lambda t: -t[1])[:6])
        print(f"top tags through {variant}: {common}")


def main(
    folds: int = 4,
    mel_steps: int = MEL_STEPS,
    steps: int = STEPS,
    seed: int = 0,
    root: str = "data/dataset",
    max_folds: int | None = None,
    threads: int = 2,
    probe: bool = False,
    adapter_folds: bool = True,
    save_adapter: str | None = None,
    output: str | None = None,
) -> None:
    """The adapters' agreement on held-back artists (`--adapter_folds`, on by default); with `--probe` also the
    logistic-regression probe on the train list's spectrograms through either adapter (`--save_adapter PATH`
    keeps the adapter it trains on the train list's clips alone)."""
    torch.set_num_threads(threads)
    plan = Plan(folds, mel_steps, steps, seed, root, max_folds)
    with Results(output, "musicnn_adapter") as results:
        if adapter_folds:
            fold_study(results, plan)
        if probe:
            probe_comparison(results, plan, save_adapter=save_adapter)


if __name__ == "__main__":
    fire.Fire(main)
