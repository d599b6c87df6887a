"""Classical models on the 57 GTZAN features: one scikit-learn Pipeline, stored with skops (no code runs on load)."""

from sklearn.base import ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from music_genre_classification.config import UserError

# packages whose types a stored pipeline may hold; skops refuses anything else (os.system, eval, ...) before it runs
TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy", "xgboost", "catboost")


def feature_pipeline(classifier: ClassifierMixin, pca: int | float | None = None) -> Pipeline:
    """Standardise each feature, optionally project on `pca` components (or a variance fraction), classify."""
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("pca", PCA(pca, random_state=0) if pca else "passthrough"),
            ("classifier", classifier),
        ]
    )


def gradient_boosting(
    library: str = "sklearn",
    n_estimators: int = 300,
    learning_rate: float = 0.05,
    max_depth: int | None = None,
    random_state: int = 0,
) -> ClassifierMixin:
    """Gradient-boosted trees from scikit-learn (HistGradientBoosting), XGBoost or CatBoost, with the same settings."""
    if library == "sklearn":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=n_estimators,
            learning_rate=learning_rate,
            max_depth=max_depth,
            early_stopping=False,
            random_state=random_state,
        )
    try:
        if library == "xgboost":
            from xgboost import XGBClassifier

            return XGBClassifier(
                n_estimators=n_estimators,
                learning_rate=learning_rate,
                max_depth=max_depth or 6,
                random_state=random_state,
                n_jobs=1,
            )
        if library == "catboost":
            from catboost import CatBoostClassifier

            return CatBoostClassifier(  # CatBoost's aliases of its own names, so that model.grid names fit all three
                n_estimators=n_estimators,
                learning_rate=learning_rate,
                max_depth=max_depth or 6,
                random_state=random_state,
                thread_count=1,
                verbose=0,
            )
    except ImportError:
        raise UserError(f"gradient boosting library={library} is not installed: pip install {library}") from None
    raise UserError(f"gradient boosting library must be sklearn, xgboost or catboost, not {library!r}")


def pipeline_to_bytes(pipeline: Pipeline) -> bytes:
    import skops.io

    return skops.io.dumps(pipeline)


def pipeline_from_bytes(data: bytes) -> Pipeline:
    """A stored pipeline, after checking that every type it holds comes from a trusted package."""
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as err:  # skops raises many types for bytes that are not a stored pipeline
        raise ValueError(f"not a readable stored model ({type(err).__name__})") from None
    refused = [t for t in untrusted if t.split(".")[0] not in TRUSTED_PACKAGES]
    if refused:
        raise UserError(f"the stored model holds types that are not trusted: {', '.join(refused)}")
    return skops.io.loads(data, trusted=untrusted)
