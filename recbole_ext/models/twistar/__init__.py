"""TwiSTAR (arXiv 2605.11553; partial official code at github.com/cst20/TwiSTAR): a planner routes each
user to a fast SID retriever, a light DIN-style re-ranker over the fast top-50, or a slow reasoning model.

- :mod:`.model`: :class:`TwiSTAR`, the RecBole model (tools, routing, evaluation record);
- :mod:`.stages`, :mod:`.rl`: its typed settings and training stages (fast, ranker, slow SFT, slow
  GRPO, planner warm-up, planner REINFORCE);
- :mod:`.knowledge`: collaborative sentences from Swing over the training sequences;
- :mod:`.slow`: the slow model's inputs, justification decoding, self-filtering and reward.

Pure building blocks, importable without RecBole or transformers:

- :mod:`.routing`: tool ids, the oracle warm-up labels (with the official up-routing of easy
  samples), per-user NDCG@k from a rank, the accuracy-minus-cost reward, routing statistics;
- :mod:`.features`: the planner's cheap per-user features and their standardiser;
- :mod:`.ranker`: the DIN-style candidate ranker, its training lists and listwise loss;
- :mod:`.planner`: the planner policy, its warm-up loss and its REINFORCE step.

``TwiSTAR`` is imported lazily, so the pure blocks stay importable without RecBole.
"""

from __future__ import annotations

__all__ = ["TwiSTAR"]


def __getattr__(name: str):
    if name == "TwiSTAR":
        from recbole_ext.models.twistar.model import TwiSTAR

        return TwiSTAR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
