"""Trainers of our plugins, subclasses of RecBole's Trainer."""
