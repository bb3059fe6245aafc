"""What the fixed vector holds: a 2-D PCA of the encoder's final state for groups of
inputs, as in the paper's Figure 2, where phrases that differ in word order land apart
and phrases that say the same in another voice land close."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from keras_s2s.studies.common import markdown_table, pyplot, save_figure, write_study

# Figure 2's phrases in the Spanish of the `bible` data set: who does what to whom, and
# the same said in another voice or order.
TRANSLATION_GROUPS = {
    "Juan ama a María": [
        "Juan ama a María",
        "Juan está enamorado de María",
        "María es amada por Juan",
        "María ama a Juan",
        "María está enamorada de Juan",
        "Juan es amado por María",
    ],
    "le di una carta": [
        "yo le di una carta en el huerto",
        "en el huerto yo le di una carta",
        "le fue dada una carta por mí en el huerto",
        "ella me dio una carta en el huerto",
        "en el huerto ella me dio una carta",
        "me fue dada una carta por ella en el huerto",
    ],
}
# For G2P: anagrams (the same letters in another order) and one word's family.
G2P_GROUPS = {
    "anagrams of stop": ["stop", "pots", "tops", "spot", "post", "opts"],
    "anagrams of least": ["least", "steal", "tales", "slate", "stale", "teals"],
    "nation": ["nation", "nations", "national", "nationally", "nationality", "international"],
}


def read_groups(path: str) -> dict[str, list[str]]:
    """`group<TAB>text` lines (UTF-8)."""
    groups: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise ValueError(f"{path}:{number}: expected group<TAB>text")
            group, text = line.rstrip("\n").split("\t", 1)
            groups.setdefault(group, []).append(text)
    return groups


def final_states(translator, texts: Sequence[str]) -> np.ndarray:
    """The top encoder layer's final hidden state for each text: `(len(texts), units)`."""
    from serving.batching import pad_sources

    ids, lengths = pad_sources(
        [translator.source_vocabulary.encode(t) for t in texts], reverse=translator.config.model.reverse_source
    )
    states = translator.encode_batch(ids, lengths)["states"]
    return states[2 * (translator.config.model.num_layers - 1)]


def principal_components(vectors: np.ndarray, count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The vectors projected on their first `count` principal axes, and the share of the
    variance each axis explains."""
    centred = vectors - vectors.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    explained = singular**2 / max(float((singular**2).sum()), 1e-12)
    return centred @ axes[:count].T, explained[:count]


def vector_study(
    run_dir: str, out_dir: str, groups: Mapping[str, Sequence[str]] | None = None, checkpoint: str = "best"
) -> dict:
    """Encodes every group's texts, projects the final states to 2-D; writes
    `vector.{json,md,png}` into `out_dir`."""
    from keras_s2s.decoder import make_translator
    from keras_s2s.scores import metric_kind

    translator = make_translator(run_dir, checkpoint=checkpoint)
    if groups is None:
        groups = G2P_GROUPS if metric_kind(translator.config) == "g2p" else TRANSLATION_GROUPS
    texts = [text for members in groups.values() for text in members]
    labels = [group for group, members in groups.items() for _ in members]
    points, explained = principal_components(final_states(translator, texts))
    rows = [{"group": g, "text": t, "pc1": float(x), "pc2": float(y)} for g, t, (x, y) in zip(labels, texts, points)]
    # How far apart the groups are against how spread each is inside.
    centres = {g: points[[i for i, label in enumerate(labels) if label == g]].mean(axis=0) for g in groups}
    within = float(np.mean([np.linalg.norm(p - centres[g]) for g, p in zip(labels, points)]))
    between = float(
        np.mean(
            [np.linalg.norm(a - b) for i, a in enumerate(centres.values()) for b in list(centres.values())[i + 1 :]]
            or [0.0]
        )
    )
    payload = {
        "study": "vector",
        "run_dir": os.path.abspath(run_dir),
        "explained_variance": [float(e) for e in explained],
        "mean_distance_to_group_centre": within,
        "mean_distance_between_group_centres": between,
        "rows": rows,
    }
    markdown = markdown_table(rows, ["group", "text", "pc1", "pc2"]) + (
        f"\nPCs 1 and 2 explain {100 * explained[0]:.0f}% and {100 * explained[1]:.0f}% of the variance; "
        f"mean distance to the group centre {within:.2f}, between group centres {between:.2f}.\n"
    )
    paths = write_study(out_dir, "vector", payload, markdown)

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 5.5))
    for index, group in enumerate(groups):
        mine = [i for i, label in enumerate(labels) if label == group]
        axis.scatter(points[mine, 0], points[mine, 1], color=f"C{index}", label=group)
        for i in mine:
            axis.annotate(texts[i], points[i], fontsize=8, xytext=(4, 3), textcoords="offset points", color=f"C{index}")
    axis.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of the variance)")
    axis.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}%)")
    axis.set_title("The encoder's final state, 2-D PCA")
    axis.legend(fontsize=8)
    save_figure(figure, paths["png"])
    return payload
