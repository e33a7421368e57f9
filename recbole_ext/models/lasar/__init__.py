"""LASAR (latent adaptive semantic-aligned reasoning): model, stages, RL stage."""

from recbole_ext.models.lasar.model import LASAR

__all__ = ["LASAR"]
