"""Semantic-ID item tokenizers (RQ-VAE, residual k-means, random, external file), collisions
(appended code or zero-collision reassignment), vocab, trie, and the tokenizer report
(``report.py``; ``python -m recbole_ext.sid report --dataset=...``).

Importing this package imports neither transformers nor faiss nor scipy (they load when a
tokenizer trains or reassigns).
"""

from recbole_ext.sid.cache import SemanticIDs, build_semantic_ids
from recbole_ext.sid.collisions import CollisionError, add_collision_code
from recbole_ext.sid.trie import SIDTrie
from recbole_ext.sid.vocab import SIDVocab

__all__ = [
    "CollisionError",
    "SIDTrie",
    "SIDVocab",
    "SemanticIDs",
    "add_collision_code",
    "build_semantic_ids",
]
