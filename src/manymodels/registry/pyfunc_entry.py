"""MLflow "models from code" entry: executed when the logged pyfunc model is loaded."""

from mlflow.models import set_model

from manymodels.registry.pyfunc import PackModel

set_model(PackModel())
