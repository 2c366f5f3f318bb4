"""Request and response bodies of the backend."""

from typing import Annotated, Any

from pydantic import BaseModel, Field

from doodle.api.metrics import FeedbackSource
from doodle.imaging import MAX_ENCODED_CHARS

MAX_IMAGES_PER_REQUEST = 64

Base64Image = Annotated[str, Field(max_length=MAX_ENCODED_CHARS, description="base64 image")]


class PredictRequest(BaseModel):
    inputs: Base64Image | Annotated[list[Base64Image], Field(min_length=1, max_length=MAX_IMAGES_PER_REQUEST)] = Field(
        description="base64 of 784 raw bytes (28x28, white on black), or of a PNG/JPEG, or a list of them"
    )


class PredictResponse(BaseModel):
    predictions: list[str] = Field(description="labels, best first")
    probabilities: list[float]
    model_version: str


class DrawingCreate(BaseModel):
    image: Base64Image
    category: str = Field(max_length=1000)
    source: FeedbackSource = Field(
        "api", description="who labelled it: the drawing page, its game (the label is the prompt) or an API client"
    )


class WaitingPublic(BaseModel):
    total: int = Field(description="labelled drawings waiting for the next training run")
    categories: dict[str, int] = Field(description="of those, per category (categories with none are left out)")
    training_starts_at: int = Field(description="a run starts once this many wait (MIN_NEW_IMAGES)")


class DrawingPublic(BaseModel):
    message: str = "Image saved successfully"
    category: str
    filename: str
    waiting: WaitingPublic


class ModelPublic(BaseModel):
    version: str = Field(description="registry version of the served model")
    categories: list[str] = Field(description="what it recognises, sorted")
    added_categories: list[str] = Field(description="categories the version it was trained from did not have")
    added_on: str | None = Field(description="ISO date this version was trained, when known")
    waiting: WaitingPublic


class CategoriesPublic(BaseModel):
    categories: list[str]
    model_version: str


class HealthPublic(BaseModel):
    status: str
    model_server: str


class ErrorPublic(BaseModel):
    detail: str = Field(description="what is wrong")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give."""
    reasons = {
        400: "the image or category is invalid",
        401: "API_TOKEN is set and the bearer token is missing or wrong",
        413: "the request body is over MAX_REQUEST_BYTES",
        502: "the model server answered with an error",
        503: "the model server or the storage is unavailable",
        507: "the storage is full",
    }
    return {status: {"model": ErrorPublic, "description": reasons[status]} for status in statuses}
