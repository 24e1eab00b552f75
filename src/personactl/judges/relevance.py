"""The offline relevance judge: is an answer closer to its own question than to other questions?

An answer to question q is embedded with the packaged MiniLM encoder (`embedding.embed`) and compared by cosine
similarity with q and with a fixed set of reference questions. Its share r is the fraction of the reference
questions other than q that are less similar to the answer than q is (ties count half): the AUROC of "own
question vs other question" for that one answer. The score is 100 x clip(2r - 1, 0, 1).

Why this scale: an answer about nothing in particular (or about something else) is as close to q as to any other
question, so r is uniform and 0.5 on average, like a chance AUROC; 100 x r would give it 50, and in a harmonic mean
with trait and coherence an off-topic answer would read as half relevant. 2r - 1 is the share above chance (as Gini
= 2 AUROC - 1), so chance and below map to 0, and 100 means q ranks first among all the references. The
references are fixed when the judge is built, so an answer's score never depends on the other answers scored with
it.

Limits: it measures topicality, not correctness or helpfulness. A wrong answer on the right topic scores 100, and
so does an answer that only repeats the question. It is only as sharp as the references are distinct: two
questions on one topic split the rank between them, an off-topic answer that happens to sit nearest its question
among the references scores 100 (with 8 everyday references, a football match report "answers" how to relax after
work), and with n other questions the score moves in steps of 200/n (hence at least MIN_OTHER_QUESTIONS). The
encoder reads an answer's first 256 word pieces, in English best.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .embedding import EmbeddingJudgeError, embed

MIN_OTHER_QUESTIONS = 5


class EmbeddingRelevanceJudge:
    """Relevance 0-100 from where an answer's own question ranks, by embedding similarity, among fixed reference
    questions; see the module docstring for the scale and its limits."""

    name = "embed:relevance"

    def __init__(self, reference_questions: Sequence[str]) -> None:
        self.reference_questions = list(dict.fromkeys(reference_questions))
        if len(self.reference_questions) < MIN_OTHER_QUESTIONS + 1:
            raise EmbeddingJudgeError(
                f"the relevance judge needs at least {MIN_OTHER_QUESTIONS + 1} distinct reference questions "
                f"({MIN_OTHER_QUESTIONS} besides the one scored), got {len(self.reference_questions)}"
            )
        self._reference = embed(self.reference_questions)

    def shares(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """For each answer, the fraction of the reference questions other than its own that are less similar to it
        than its own question (ties count half)."""
        if len(questions) != len(answers):
            raise EmbeddingJudgeError(f"the relevance judge got {len(questions)} questions but {len(answers)} answers")
        if not answers:
            return np.zeros(0)
        vectors = dict(zip(self.reference_questions, self._reference))
        unseen = [q for q in dict.fromkeys(questions) if q not in vectors]
        vectors.update(zip(unseen, embed(unseen)))
        answer_vectors = embed(answers)
        own = np.einsum("ij,ij->i", answer_vectors, np.stack([vectors[q] for q in questions]))[:, None]
        similarity = answer_vectors @ self._reference.T
        other = np.array([[r != q for r in self.reference_questions] for q in questions])
        below = ((similarity < own) & other).sum(1) + 0.5 * ((similarity == own) & other).sum(1)
        return below / other.sum(1)

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        """100 x clip(2r - 1, 0, 1) per answer; a blank answer answers nothing and scores 0."""
        shares = self.shares(questions, answers)
        return [0.0 if not a.strip() else float(100.0 * np.clip(2.0 * r - 1.0, 0.0, 1.0)) for a, r in zip(answers, shares)]
