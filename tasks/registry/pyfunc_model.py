"""MLflow pyfunc for an exported version (logged as "models from code").

``mlflow.pyfunc.load_model(uri).predict(frame)`` returns calibrated probabilities,
computed by the same verified loader the model server uses.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class CalibratedTabularModel(PythonModel):
    def load_context(self, context) -> None:
        from serving.contract.model import LoadedModel

        self.model = LoadedModel.load(context.artifacts["model"])

    def predict(self, context, model_input, params=None) -> np.ndarray:
        from serving.contract.inputs import coerce_column

        columns = {name: coerce_column(spec, model_input[name].tolist()).values
                   for name, spec in self.model.specs.items()}
        _raw, probability = self.model.score_columns(columns)
        return probability


mlflow.models.set_model(CalibratedTabularModel())
