"""The runner's settings: each field is the environment variable of its name."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from imgpipe.runtime.config import (
    AmqpSettings,
    ImageprocClientSettings,
    LogSettings,
    PresetSettings,
    S3Settings,
)


class RunnerSettings(AmqpSettings, S3Settings, ImageprocClientSettings, PresetSettings,
                     LogSettings):
    """`imgpipe runner`: consumes a stage's events and drives imageproc."""

    runner_stage: str | None = Field(
        default=None, description="Stage name; defaults to the publish exchange's name."
    )
    runner_pipeline: str | None = Field(
        default=None, description="Pipeline of this stage; default: the one carried by each event."
    )
    runner_data_path: Literal["auto", "bytes"] = Field(
        default="auto",
        description="auto: imageproc reads and writes S3 through presigned URLs when the store "
                    "presigns (the embedded one does not); bytes: the runner moves every byte.",
    )
    runner_host: str = "127.0.0.1"
    runner_port: int = Field(default=8001, ge=0, le=65535)

    @model_validator(mode="after")
    def _canonical_pipeline(self) -> RunnerSettings:
        """The canonical form (what provenance records and verification re-runs).

        A preset name is resolved with the presets file; a name imgpipe does
        not know here is kept as given: imageproc decides.
        """
        from imgpipe.domain.pipeline import PipelineError, parse_pipeline

        value = self.runner_pipeline
        if value is None or not value.strip():
            self.runner_pipeline = None
            return self
        try:
            self.runner_pipeline = parse_pipeline(value, self.preset_pipelines()).canonical()
        except PipelineError:
            self.runner_pipeline = value.strip()
        return self

    @property
    def stage(self) -> str:
        return self.runner_stage or self.amqp_exchange_publish
