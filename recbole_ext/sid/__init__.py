"""Semantic-ID item tokenizers (RQ-VAE, random, external file), collision code, vocab, trie.

Importing this package imports neither transformers nor faiss (faiss loads when RQ-VAE trains).
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
