"""TwiSTAR (arXiv 2605.11553; partial official code at github.com/cst20/TwiSTAR): a planner routes each
user to a fast SID retriever, a light DIN-style re-ranker over the fast top-50, or a slow reasoning model.

Pure building blocks, importable without RecBole or transformers:

- :mod:`.routing`: tool ids, the oracle warm-up labels (with the official up-routing of easy
  samples), per-user NDCG@k from a rank, the accuracy-minus-cost reward, routing statistics;
- :mod:`.features`: the planner's cheap per-user features and their standardiser;
- :mod:`.ranker`: the DIN-style candidate ranker, its training lists and listwise loss;
- :mod:`.planner`: the planner policy, its warm-up loss and its REINFORCE step.
"""
