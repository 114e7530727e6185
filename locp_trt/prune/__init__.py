"""Pruning: importance criteria, pruning plans, and applying a plan physically."""

from .importance import Importance as Importance
from .importance import Scorer as Scorer
from .importance import TaylorScorer as TaylorScorer
from .importance import accumulate_taylor as accumulate_taylor
from .importance import group_importance as group_importance
from .importance import importance_lost as importance_lost
from .importance import most_important as most_important
from .importance import scorer_for as scorer_for
from .importance import taylor_scores as taylor_scores
from .plan import PruningPlan as PruningPlan
from .plan import apply_plan as apply_plan
from .plan import load_pruned as load_pruned
from .plan import save_pruned as save_pruned

__all__ = ["Importance", "Scorer", "TaylorScorer", "scorer_for", "accumulate_taylor", "group_importance", "importance_lost", "most_important",
           "taylor_scores", "PruningPlan", "apply_plan", "load_pruned", "save_pruned"]
