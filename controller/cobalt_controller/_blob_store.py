"""The blob store the configuration names, checked before the controller serves."""

from __future__ import annotations

from cobalt_common.errors import ConfigError
from cobalt_controller._config import ControllerConfig
from cobalt_controller.blobs import BlobStore, LocalBlobStore


def open_blob_store(config: ControllerConfig) -> BlobStore:
    """``blob_dir`` by default; an S3 bucket with ``[blobs] type = "s3"``, after
    proving the bucket exists and the credentials may read and write it.

    Raises:
        ConfigError: boto3 is not installed, or the bucket cannot be used (the
            message names the bucket, the endpoint and what to fix).
    """
    settings = config.s3
    if settings is None:
        return LocalBlobStore(config.blob_dir)
    try:
        # boto3 is in the optional "remote" extra: only an S3 store imports it.
        from cobalt_controller.blobs.s3 import S3BlobStore
    except ImportError:
        raise ConfigError(
            '[blobs] type = "s3" needs boto3, which is not installed: '
            "pip install 'cobalt[remote]'."
        ) from None
    store = S3BlobStore(
        settings.bucket,
        prefix=settings.prefix,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        presign_ttl_s=settings.presign_ttl_s,
    )
    store.check()
    return store
