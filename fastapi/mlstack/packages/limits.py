"""Upload limits (env prefix ``MLSTACK_PACKAGE_``): a section of the API's settings tree
(``mlstack.api.config.Config.packages``), read once at startup."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class PackageLimits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_PACKAGE_", env_file=None, extra="ignore")

    max_upload_bytes: int = Field(200 * MiB, ge=1, description="largest accepted .zip (compressed) upload")
    max_entries: int = Field(2000, ge=1, description="most files and folders in one zip")
    max_entry_bytes: int = Field(500 * MiB, ge=1, description="largest uncompressed file in a zip")
    max_total_bytes: int = Field(1024 * MiB, ge=1, description="largest uncompressed total of a zip")
    max_ratio: float = Field(200.0, gt=1, description="largest uncompressed/compressed ratio, per file and overall")
    ratio_min_bytes: int = Field(1 * MiB, ge=0,
                                 description="files (and archives) smaller than this are exempt from the ratio check")
    max_text_bytes: int = Field(1 * MiB, ge=1, description="largest meta.json, app.py, requirements.txt or MLmodel")
    form_overhead_bytes: int = Field(256 * 1024, ge=1024, description="multipart bytes allowed beyond the zip")

