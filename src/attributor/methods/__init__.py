"""Attribution methods, registered by name (``attributor methods`` lists them)."""

from attributor.methods.base import Method, TrainingContext, get_method, method_names
from attributor.methods.datainf import DataInf
from attributor.methods.embedding import EmbeddingSimilarity
from attributor.methods.if_cg import CGInfluence
from attributor.methods.if_ekfac import EKFACInfluence
from attributor.methods.if_explicit import ExplicitInfluence
from attributor.methods.if_lissa import LiSSAInfluence
from attributor.methods.influence import InfluenceFunction
from attributor.methods.mirrored import MirroredInfluence
from attributor.methods.random_baseline import RandomScores
from attributor.methods.tracin import GradCos, GradDot, TracIn
from attributor.methods.trak import TRAK

__all__ = ["CGInfluence", "DataInf", "EKFACInfluence", "EmbeddingSimilarity", "ExplicitInfluence", "GradCos",
           "GradDot", "InfluenceFunction", "LiSSAInfluence", "Method", "MirroredInfluence", "RandomScores", "TRAK", "TracIn",
           "TrainingContext", "get_method", "method_names"]
