"""Constrained decoding for semantic-ID generators and conversion to RecBole scores.

Importing this package does not import transformers.
"""

from recbole_ext.generation.beam_search import BeamSearchOutput, beam_search, t5_beam_search
from recbole_ext.generation.scores import beams_to_scores
from recbole_ext.generation.t5_decoder import T5CachedDecoder, encode

__all__ = ["BeamSearchOutput", "T5CachedDecoder", "beam_search", "beams_to_scores", "encode", "t5_beam_search"]
