"""STREAM-Rec (arXiv 2504.09627): the model's mathematics (:mod:`.model`), its stages and typed
settings (:mod:`.stages`), its slow-thinking labels and their diagnostics (:mod:`.labels`) and the
nearest-item tables (:mod:`.neighbors`)."""

from recbole_ext.models.stream_rec.model import STREAMRec

__all__ = ["STREAMRec"]
