"""Pipeline-level settings written as steps: the output format and auto-orientation."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from imgpipe.domain.pipeline.base import Operation, register
from imgpipe.domain.pipeline.types import Colour, lowered

FormatName = Literal["jpeg", "png", "webp", "avif", "tiff", "gif"]

MEDIA_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "tiff": "image/tiff",
    "gif": "image/gif",
}
EXTENSIONS: dict[str, str] = {
    "jpeg": "jpg",
    "png": "png",
    "webp": "webp",
    "avif": "avif",
    "tiff": "tiff",
    "gif": "gif",
}
DEFAULT_QUALITY: dict[str, int] = {"jpeg": 80, "webp": 80, "avif": 50}
"""Quality used when a lossy format is given no ``q``."""


_USES: dict[str, tuple[str, ...]] = {
    "q": ("jpeg", "webp", "avif"),
    "lossless": ("webp", "avif"),
    "progressive": ("jpeg", "png", "gif"),
    "effort": ("jpeg", "png", "webp", "avif", "gif"),
    "palette": ("png",),
    "bg": ("jpeg",),
}
_EFFORT: dict[str, tuple[int, int]] = {"jpeg": (0, 2), "png": (0, 9), "webp": (0, 6), "avif": (0, 9), "gif": (1, 10)}


@register
class Format(Operation):
    """Output format and encoder options. At most one per pipeline; default ``jpeg``.

    Without a ``format`` step a pipeline writes JPEG. ``q`` is the encoder
    quality (JPEG, WebP, AVIF, TIFF with JPEG compression); its default
    depends on the format. Metadata is stripped unless ``keep`` says otherwise.
    """

    name: ClassVar[str] = "format"
    main: ClassVar[str | None] = "format"
    aliases: ClassVar[dict[str, str]] = {"quality": "q", "type": "format", "interlace": "progressive"}

    format: Annotated[FormatName, lowered({"jpg": "jpeg", "tif": "tiff"})] = Field(
        default="jpeg", description="Output format."
    )
    q: int | None = Field(
        default=None, ge=1, le=100, description="Quality 1-100 (JPEG, WebP 80; AVIF 50)."
    )
    lossless: bool = Field(default=False, description="Lossless WebP or AVIF (q then unused).")
    progressive: bool = Field(default=False, description="Progressive JPEG or interlaced PNG/GIF.")
    effort: int | None = Field(
        default=None,
        ge=0,
        le=10,
        description=(
            "Encoder effort, bytes against CPU: JPEG 0-2 (2), PNG zlib level 0-9 (6), "
            "WebP 0-6 (4), AVIF 0-9 (4), GIF 1-10 (7)."
        ),
    )
    palette: bool = Field(
        default=False, description="PNG: quantise to a 256-colour palette (lossy, smaller)."
    )
    keep: Annotated[Literal["none", "icc", "meta"], lowered()] = Field(
        default="none",
        description="Metadata kept: none, the ICC profile, or ICC+EXIF+XMP+IPTC (meta).",
    )
    bg: Colour = Field(
        default="ffffff", description="Background under transparency for formats without alpha."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_quality_is_none(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("q") is not None:
            fmt = str(data.get("format", "jpeg")).strip().lower()
            fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt, fmt)
            try:
                if int(data["q"]) == DEFAULT_QUALITY.get(fmt):
                    data = {k: v for k, v in data.items() if k != "q"}
            except (TypeError, ValueError):
                pass
        return data

    @model_validator(mode="after")
    def _applies_to_format(self) -> Format:
        for key in ("q", "lossless", "progressive", "effort", "palette", "bg"):
            value = getattr(self, key)
            if value != type(self).model_fields[key].default and self.format not in _USES[key]:
                users = ", ".join(_USES[key])
                raise ValueError(f"{key}: not used by {self.format} (only {users})")
        low, high = _EFFORT.get(self.format, (0, 10))
        if self.effort is not None and not low <= self.effort <= high:
            raise ValueError(f"effort: {self.format} takes {low} to {high}")
        return self

    def arguments(self) -> list[tuple[str, Any]]:
        """Like every step's, but the format name is always written."""
        rest = [(k, v) for k, v in super().arguments() if k != "format"]
        return [("format", self.format), *rest]

    @property
    def quality(self) -> int:
        """The quality the encoder uses, defaults resolved."""
        return self.q if self.q is not None else DEFAULT_QUALITY.get(self.format, 80)


@register
class Autorotate(Operation):
    """Turn the image upright from its EXIF orientation (on by default), clearing the tag."""

    name: ClassVar[str] = "autorotate"
    main: ClassVar[str | None] = "on"

    on: bool = Field(default=True, description="Apply the EXIF orientation at load.")
