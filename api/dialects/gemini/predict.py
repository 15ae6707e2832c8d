"""Imagen's ``:predict`` (``instances`` / ``parameters`` -> ``predictions``), as the Imagen API
reference describes it (https://ai.google.dev/gemini-api/docs/imagen): served by whatever model the
id maps to."""

from __future__ import annotations

from api.dialects.gemini.schemas import Prediction, PredictRequest, PredictResponse
from api.dialects.gemini.translate import invalid, output_format
from core.generation import DeliveredImage, GenerationRequest

# canonical field names (core.planning's errors) -> the :predict request's
PREDICT_PARAMS = {
    "n": "parameters.sampleCount",
    "aspect_ratio": "parameters.aspectRatio",
    "image_size": "parameters.sampleImageSize",
    "output_format": "parameters.outputOptions.mimeType",
    "output_compression": "parameters.outputOptions.compressionQuality",
    "image": "instances",
}


def predict_to_generation(wire: PredictRequest, *, model: str) -> GenerationRequest:
    """Imagen's ``instances``/``parameters``. ``sampleCount`` defaults to 1 (the REST docs say 4;
    one image is the cheaper surprise)."""
    if len(wire.instances) > 1:
        raise invalid("instances", "Imagen takes exactly one instance per request.")
    params = wire.parameters
    options = params.output_options if params else None
    return GenerationRequest(
        prompt=wire.instances[0].prompt, model=model, n=(params.sample_count if params else None) or 1,
        aspect_ratio=params.aspect_ratio if params else None,
        image_size=(params.sample_image_size or params.image_size) if params else None,
        output_format=output_format(options.mime_type if options else None, "parameters.outputOptions.mimeType"),
        output_compression=options.compression_quality if options else None,
    )


def to_predict_wire(images: list[DeliveredImage]) -> PredictResponse:
    return PredictResponse(predictions=[Prediction(bytes_base64_encoded=i.b64_json or "", mime_type=i.mime_type)
                                        for i in images])


def predict_blocked(message: str, *, include_rai_reason: bool) -> PredictResponse:
    """Imagen drops filtered images; with ``includeRaiReason`` it says why instead."""
    return PredictResponse(predictions=[Prediction(rai_filtered_reason=message)] if include_rai_reason else None)
