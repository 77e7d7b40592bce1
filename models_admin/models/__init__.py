"""The app's models, one module per concern; importable from here as
Django expects."""

from models_admin.models.knowledge import (
    KnowledgeBase,
    KnowledgeChunk,
    KnowledgeIndex,
    KnowledgeSource,
)
from models_admin.models.moderation import FilterHit, FilterRule, FilterRulesEpoch, ReviewEvent
from models_admin.models.speech import SpeechModel
from models_admin.models.training import Dataset, DatasetExample, TrainingJob
from models_admin.models.versions import Canary, Compression, Evaluation, ModelVersion, Promotion

__all__ = [
    "Canary",
    "Compression",
    "Dataset",
    "DatasetExample",
    "Evaluation",
    "FilterHit",
    "FilterRule",
    "FilterRulesEpoch",
    "KnowledgeBase",
    "KnowledgeChunk",
    "KnowledgeIndex",
    "KnowledgeSource",
    "ModelVersion",
    "Promotion",
    "ReviewEvent",
    "SpeechModel",
    "TrainingJob",
]
