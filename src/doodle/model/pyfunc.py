"""The MLflow pyfunc model: preprocessing plus the network, returning ranked labels."""

import logging
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ParamSchema, ParamSpec

from doodle.imaging import PIXELS, SIDE, InvalidImageError, decode_image, normalize_drawing

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
MAX_BATCH = 1024
# Inputs are free-form (base64 strings or pixel arrays); only the params are typed. With model_info,
# each answer also names the categories this version added over the one it was trained from.
SIGNATURE = ModelSignature(
    inputs=None,
    params=ParamSchema([ParamSpec("top_k", "long", DEFAULT_TOP_K), ParamSpec("model_info", "boolean", False)]),
)


def _pixels_to_bitmap(values: np.ndarray, index: int) -> np.ndarray:
    """Validate 784 numbers in [0, 255] (or [0, 1] floats) into uint8 (28, 28)."""
    if values.size != PIXELS:
        raise InvalidImageError(f"image {index} has {values.size} values: expected {PIXELS}")
    try:
        values = values.astype(np.float64).reshape(SIDE, SIDE)
    except (TypeError, ValueError):
        raise InvalidImageError(f"image {index} has non-numeric values") from None
    if not np.isfinite(values).all():
        raise InvalidImageError(f"image {index} has NaN or infinite values")
    if values.min() < 0 or values.max() > 255:
        raise InvalidImageError(f"image {index} has values outside 0-255")
    if values.max() <= 1.0 and values.dtype.kind == "f":
        values = values * 255
    return np.rint(values).astype(np.uint8)


_INPUTS_HINT = "inputs must be base64 strings, or an (n, 784) array of pixel values in 0-255"


def _items(model_input: Any) -> list[Any]:
    """Split any accepted input into one item per image."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == PIXELS:
            return list(model_input.to_numpy())
        return list(model_input.iloc[:, 0])
    if isinstance(model_input, str | bytes):
        return [model_input]
    try:
        array = np.asarray(model_input, dtype=object if isinstance(model_input, list) else None)
        if array.dtype.kind in "USO":
            if array.ndim == 0:
                return [array.item()]
            if array.ndim == 1 and all(isinstance(item, str) for item in array):
                return list(array)
        numeric = np.asarray(model_input)
    except (TypeError, ValueError):  # e.g. nested lists of different lengths
        raise InvalidImageError(_INPUTS_HINT) from None
    if numeric.ndim == 1 and numeric.size == PIXELS:
        return [numeric]
    if numeric.ndim >= 2:
        return list(numeric.reshape(numeric.shape[0], -1)) if numeric.shape[0] else []
    raise InvalidImageError(_INPUTS_HINT)


def to_bitmaps(model_input: Any) -> np.ndarray:
    """Decode and normalise every image: uint8 (n, 784) in Quick Draw's form."""
    items = _items(model_input)
    if not items:
        raise InvalidImageError("inputs is empty: send at least one image")
    if len(items) > MAX_BATCH:
        raise InvalidImageError(f"too many images: {len(items)} (at most {MAX_BATCH})")
    bitmaps = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            ink = decode_image(item)
        else:
            ink = _pixels_to_bitmap(np.asarray(item), index)
        bitmaps.append(normalize_drawing(ink).reshape(PIXELS))
    return np.stack(bitmaps)


class DoodleClassifier(PythonModel):
    """Ranks the categories for each drawing; see `predict` for the output."""

    def load_context(self, context: PythonModelContext) -> None:
        # torch loads with the model, not with this module: registering a model needs only the class.
        from doodle.model.evaluate import predict_proba
        from doodle.model.net import fuse_for_inference, load_checkpoint

        self.predict_proba = predict_proba
        net, self.categories, meta = load_checkpoint(context.artifacts["checkpoint"])
        self.added_categories = list(meta.get("added_categories", []))
        self.added_on = meta.get("added_on")
        self.net = fuse_for_inference(net)
        config = context.model_config or {}
        self.model_version = str(config.get("model_version", "unregistered"))
        logger.info("model loaded version=%s classes=%d", self.model_version, len(self.categories))

    # np.ndarray is what the scoring server passes for JSON "inputs" (0-d for one string). MLflow neither
    # converts nor validates input under this hint, so DataFrames, lists and strings still arrive as they are.
    def predict(
        self, context: PythonModelContext | None, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """One dict per image: labels best first, their probabilities, and model_version.

        With the param model_info, also added_categories and added_on (an ISO date, or None).
        """
        top_k = int((params or {}).get("top_k", DEFAULT_TOP_K))
        info = {"added_categories": self.added_categories, "added_on": self.added_on}
        with_info = bool((params or {}).get("model_info", False))
        top_k = len(self.categories) if top_k <= 0 else min(top_k, len(self.categories))
        try:
            bitmaps = to_bitmaps(model_input)
        except InvalidImageError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None
        proba = self.predict_proba(self.net, bitmaps)
        ranked = np.argsort(-proba, axis=1)[:, :top_k]
        return [
            {
                "labels": [self.categories[i] for i in row],
                "probabilities": [round(float(p), 6) for p in proba[n, row]],
                "model_version": self.model_version,
                **(info if with_info else {}),
            }
            for n, row in enumerate(ranked)
        ]
