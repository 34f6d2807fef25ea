"""The jobs layer: train and score tasks, job DAGs, and the Python API over them."""

from manymodels.jobs.project import Project, TrainRun, load_bundle
from manymodels.jobs.runner import JobOutcome, TaskOutcome, run_job
from manymodels.jobs.score import ScoreOutcome, score
from manymodels.jobs.train import TrainOutcome, train

__all__ = [
    "JobOutcome",
    "Project",
    "ScoreOutcome",
    "TaskOutcome",
    "TrainOutcome",
    "TrainRun",
    "load_bundle",
    "run_job",
    "score",
    "train",
]
