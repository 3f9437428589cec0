"""Rewards: rubrics (weighted reward functions and zero-weight metrics) that score live episodes.

from rewards import Rubric, reward, metric
"""

from rewards.loader import RubricFileError, load_rubrics
from rewards.rubric import Match, RewardFn, Rubric, metric, reward
from rewards.view import EpisodeView

__all__ = [
    "EpisodeView",
    "Match",
    "RewardFn",
    "Rubric",
    "RubricFileError",
    "load_rubrics",
    "metric",
    "reward",
]
