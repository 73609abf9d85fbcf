"""The watermark operation: a text or a named image laid over the picture."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from imgpipe.domain.pipeline.base import Operation, register
from imgpipe.domain.pipeline.geometry import Gravity
from imgpipe.domain.pipeline.types import Colour

OVERLAY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@register
class Watermark(Operation):
    """Overlay ``text`` or a configured image ``image`` at ``gravity``, with ``opacity``.

    Images are looked up by name among the overlays the service was
    configured with (``IMAGEPROC_OVERLAYS``); nothing is ever fetched.
    """

    name: ClassVar[str] = "watermark"
    main: ClassVar[str | None] = "text"
    aliases: ClassVar[dict[str, str]] = {"color": "colour", "pos": "gravity"}

    text: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="Text to draw (UTF-8, percent-encoded in the text form)."
    )
    image: str | None = Field(default=None, description="Name of a configured overlay image.")
    gravity: Gravity = Field(default="southeast", description="Where the overlay goes.")
    opacity: float = Field(default=0.5, ge=0, le=1, description="0 invisible, 1 opaque.")
    size: int = Field(default=24, ge=4, le=1000, description="Text height in pixels.")
    colour: Colour = Field(default="ffffff", description="Text colour.")
    margin: int = Field(default=10, ge=0, le=4096, description="Distance from the edges.")
    width: int | None = Field(
        default=None, ge=1, le=16384, description="Scale an image overlay to this width."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Watermark:
        if (self.text is None) == (self.image is None):
            raise ValueError("text or image: give exactly one")
        if self.text is not None and not self.text.strip():
            raise ValueError("text: must not be empty")
        if self.gravity in ("attention", "entropy"):
            raise ValueError("gravity: expected centre or a compass direction")
        if self.image is not None and not OVERLAY_NAME.fullmatch(self.image):
            raise ValueError("image: expected an overlay name (letters, digits, '.', '_', '-')")
        return self
