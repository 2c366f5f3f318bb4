"""Request and response bodies of the backend."""

from typing import Annotated

from pydantic import BaseModel, Field

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


class DrawingPublic(BaseModel):
    message: str = "Image saved successfully"
    category: str
    filename: str


class CategoriesPublic(BaseModel):
    categories: list[str]
    model_version: str


class HealthPublic(BaseModel):
    status: str
    model_server: str
