"""Request bodies uploaded as files: media type checked, size bounded while read.

The size limit is enforced on the bytes received, not only on a declared
``Content-Length``, so a chunked upload cannot grow past it in memory.
"""

from __future__ import annotations

import codecs
from collections.abc import Collection

from starlette.requests import Request


class UploadRefused(Exception):
    """The body cannot be taken: ``status`` 413 (too large) or 415 (media type, charset)."""

    def __init__(self, status: int, code: str, detail: str, *, name: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.name = status, code, detail, name


def _too_large(limit: int) -> UploadRefused:
    detail = f"the upload is larger than {limit} bytes; split the file"
    return UploadRefused(413, "payload-too-large", detail, name="body")


def body_charset(request: Request, media_types: Collection[str]) -> str:
    """The declared charset (default utf-8) of a body that must be one of ``media_types``."""
    media, _, params = request.headers.get("content-type", "").partition(";")
    media = media.strip().lower()
    if media not in media_types:
        detail = f"the body must be {' or '.join(media_types)}, not {media or 'none'}"
        raise UploadRefused(415, "unsupported-media-type", detail, name="content-type")
    charset = "utf-8"
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    try:
        codecs.lookup(charset)
    except LookupError:
        detail = f"unknown charset {charset[:40]!r}"
        raise UploadRefused(415, "unsupported-media-type", detail, name="content-type") from None
    return charset


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or ``UploadRefused`` (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
