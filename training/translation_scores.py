"""Scoring translations with sacrebleu (chrF, chrF++, BLEU), per document and overall, beside two baselines.

- chrF (Popović 2015): character n-gram F-score (n ≤ 6, β = 2); chrF++ adds word uni- and bigrams
  (Popović 2017). The shared tasks on Indigenous languages of the Americas (AmericasNLP) rank by chrF: it credits
  partly right words, which matters for a polysynthetic language with a young, varying orthography.
- BLEU (Papineni et al. 2002), corpus level, sacrebleu's default 13a tokenisation.

Baselines, scored the same way on the same rows:
- ``copy``: the Spanish source as the "translation" (names, loans and numbers are shared, so it is not zero);
- ``dictionary``: word for word, each Spanish word replaced by the Otomí word it is most often aligned with in
  the training pairs (a Dice-coefficient alignment over co-occurrence in the same pair), kept as is when unknown.

sacrebleu comes with the ``translation`` extra.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

WORD = re.compile(r"\w+")


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level chrF, chrF++ and BLEU of ``hypotheses`` against one reference each."""
    from sacrebleu.metrics import BLEU, CHRF

    refs = [list(references)]
    hyps = list(hypotheses)
    return {
        "chrf": round(CHRF().corpus_score(hyps, refs).score, 2),
        "chrf++": round(CHRF(word_order=2).corpus_score(hyps, refs).score, 2),
        "bleu": round(
            BLEU(force=True).corpus_score(hyps, refs).score, 2
        ),  # force: the texts are not tokenised
        "count": len(hyps),
    }


def scores_by_document(
    hypotheses: Sequence[str], references: Sequence[str], documents: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``scores`` for every document and ``overall``."""
    out = {}
    for document in dict.fromkeys(documents):
        rows = [i for i, d in enumerate(documents) if d == document]
        out[document] = scores([hypotheses[i] for i in rows], [references[i] for i in rows])
    out["overall"] = scores(hypotheses, references)
    return out


def words(text: str) -> list[str]:
    return WORD.findall(text)


class WordDictionary:
    """Word-for-word translation learned from sentence pairs: for each source word, the target word with the
    highest Dice coefficient 2·c(s, t) / (c(s) + c(t)) over pairs where both occur (ties: the more frequent)."""

    def __init__(self, pairs: Sequence[tuple[str, str]], min_count: int = 1) -> None:
        source_count: Counter[str] = Counter()
        target_count: Counter[str] = Counter()
        together: dict[str, Counter[str]] = defaultdict(Counter)
        for source, target in pairs:
            s_words = set(w.lower() for w in words(source))
            t_words = set(words(target))
            source_count.update(s_words)
            target_count.update(t_words)
            for s in s_words:
                together[s].update(t_words)
        self.table: dict[str, str] = {}
        self.dice: dict[str, float] = {}
        for s, counts in together.items():
            if source_count[s] < min_count:
                continue
            best = max(
                counts.items(),
                key=lambda item: (2 * item[1] / (source_count[s] + target_count[item[0]]), item[1], item[0]),
            )
            self.table[s] = best[0]
            self.dice[s] = 2 * best[1] / (source_count[s] + target_count[best[0]])
        self.counts = source_count

    def entries(self, min_count: int = 2, min_dice: float = 0.3) -> list[tuple[str, str]]:
        """The word pairs seen at least ``min_count`` times with a Dice coefficient of at least ``min_dice``."""
        return sorted(
            (s, t) for s, t in self.table.items() if self.counts[s] >= min_count and self.dice[s] >= min_dice
        )

    def translate(self, text: str) -> str:
        """Each word replaced in place; spaces and punctuation stay where they were."""
        return WORD.sub(lambda m: self.table.get(m.group().lower(), m.group()), text)


def copy_source(text: str) -> str:
    return text


def baselines(train_pairs: Sequence[tuple[str, str]]) -> dict[str, Callable[[str], str]]:
    """The two baselines, the dictionary learned from ``train_pairs`` (Spanish, Otomí)."""
    return {"copy": copy_source, "dictionary": WordDictionary(train_pairs).translate}
