"""The S3 backend of :mod:`homeport.kit.storage` (AWS S3, MinIO, Ceph RGW, ... through the S3 API).

A staged object is a multipart upload: part ``n`` of an upload is S3 part ``n`` and its token is
the part's ETag. Every part but the last must be at least 5 MiB (S3's rule), which is why
``min_part_size`` is 5 MiB and the upload protocols size their chunks from it.

Errors never carry credentials: a missing object is :class:`ObjectMissing`, anything else the
service or the network does wrong is :class:`StorageError` with the S3 error code and operation.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from homeport.kit.storage import READ_BLOCK, ObjectMissing, Part, StorageError, check_key

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

MIB = 1024 * 1024
GIB = 1024 * MIB
# S3's limits: a part (uploaded or copied) is 5 MiB..5 GiB (the last may be smaller), a single
# CopyObject copies at most 5 GiB.
MIN_PART_SIZE = 5 * MIB
SINGLE_COPY_LIMIT = 5 * GIB

_MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_MISSING_UPLOAD_CODES = frozenset({"NoSuchUpload"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})

T = TypeVar("T")


@functools.cache
def _shared_session() -> AioSession:
    """One botocore session per process: a new one parses the S3 service model again (about
    0.1 s), and every client it makes has its own connections anyway."""
    return get_session()


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Storage:
    """Objects live in one bucket, under ``prefix`` when one is set."""

    name = "s3"
    min_part_size = MIN_PART_SIZE
    # Objects above this are moved with a multipart copy; the part size of that copy.
    single_copy_limit = SINGLE_COPY_LIMIT
    copy_part_size = GIB

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        prefix: str = "",
        create_bucket: bool = False,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self.region = region
        self.prefix = check_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.create_bucket = create_bucket
        self._access_key_id = access_key_id or None
        self._secret_access_key = secret_access_key or None
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: S3Client | None = None

    # Lifecycle

    async def start(self) -> None:
        if self._client is not None:
            return
        config = AioConfig(
            signature_version="s3v4",
            # Custom endpoints (MinIO, moto, ...) rarely resolve bucket subdomains.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # Only send/verify the flexible checksums when S3 requires them: many S3-compatible
            # servers reject or mishandle them, and the upload layer checks SHA-256 itself.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                _shared_session().create_client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id=self._access_key_id,
                    aws_secret_access_key=self._secret_access_key,
                    config=config,
                )
            )
        except (BotoCoreError, ValueError) as exc:
            await stack.aclose()
            self._fail("create client", exc)
        self._stack, self._client = stack, client
        if self.create_bucket:
            try:
                await self._ensure_bucket()
            except StorageError:
                await self.close()
                raise

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def ping(self) -> None:
        await self._call("HeadBucket", self._s3.head_bucket(Bucket=self.bucket))

    async def _ensure_bucket(self) -> None:
        try:
            if self.region == "us-east-1":
                await self._s3.create_bucket(Bucket=self.bucket)
            else:
                await self._s3.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": self.region},  # type: ignore[typeddict-item]
                )
        except ClientError as exc:
            if _error_code(exc) not in _BUCKET_EXISTS_CODES:
                self._fail("CreateBucket", exc)
        except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._fail("CreateBucket", exc)

    # Staged objects (multipart uploads)

    async def create_staged(self, key: str) -> str:
        created = await self._call(
            "CreateMultipartUpload",
            self._s3.create_multipart_upload(Bucket=self.bucket, Key=self._key(key)),
        )
        return created["UploadId"]

    async def write_part(self, key: str, handle: str, part: Part, data: bytes) -> Part:
        uploaded = await self._call(
            "UploadPart",
            self._s3.upload_part(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=handle,
                PartNumber=part.number,
                Body=data,
            ),
            missing=key,
        )
        return Part(number=part.number, offset=part.offset, size=len(data), token=uploaded["ETag"])

    async def assemble(self, key: str, handle: str, parts: list[Part]) -> None:
        full_key = self._key(key)
        ordered = sorted(parts, key=lambda part: part.number)
        if not ordered:
            # S3 cannot complete a multipart upload without parts: an empty object is a put.
            await self.abort_upload(key, handle)
            await self.put(key, b"", "application/octet-stream")
            return
        if any(not part.token for part in ordered):
            ordered = await self._with_listed_tokens(key, handle, ordered)
        completed: list[CompletedPartTypeDef] = [
            {"PartNumber": part.number, "ETag": part.token} for part in ordered
        ]
        await self._call(
            "CompleteMultipartUpload",
            self._s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full_key,
                UploadId=handle,
                MultipartUpload={"Parts": completed},
            ),
            missing=key,
        )

    async def reopen(self, key: str, parts: list[Part]) -> tuple[str, list[Part]]:
        full_key = self._key(key)
        if await self.size(key) is None:
            raise ObjectMissing(key)
        handle = await self.create_staged(key)
        reopened: list[Part] = []
        try:
            for part in sorted(parts, key=lambda part: part.number):
                if part.size == 0:
                    # A byte range cannot be empty; an empty part is uploaded as such.
                    reopened.append(await self.write_part(key, handle, part, b""))
                    continue
                copied = await self._call(
                    "UploadPartCopy",
                    self._s3.upload_part_copy(
                        Bucket=self.bucket,
                        Key=full_key,
                        UploadId=handle,
                        PartNumber=part.number,
                        CopySource={"Bucket": self.bucket, "Key": full_key},
                        CopySourceRange=f"bytes={part.offset}-{part.offset + part.size - 1}",
                    ),
                    missing=key,
                )
                token = copied["CopyPartResult"]["ETag"]
                reopened.append(Part(part.number, part.offset, part.size, token))
        except BaseException:
            with contextlib.suppress(StorageError):
                await self.abort_upload(key, handle)
            raise
        # The parts are copies now; the assembled object would only be stale bytes.
        await self.delete(key)
        return handle, reopened

    async def abort(self, key: str, handle: str) -> None:
        """Abort the multipart upload and remove any object already assembled at ``key``
        (the same effect as on a local directory, where both are one file)."""
        await self.abort_upload(key, handle)
        await self.delete(key)

    async def abort_upload(self, key: str, handle: str) -> None:
        """Abort only the multipart upload (its parts stop costing storage)."""
        if not handle:
            return
        try:
            await self._call(
                "AbortMultipartUpload",
                self._s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._key(key), UploadId=handle
                ),
                missing=key,
            )
        except ObjectMissing:
            return

    async def _with_listed_tokens(self, key: str, handle: str, parts: list[Part]) -> list[Part]:
        """Fill in ETags the caller does not have from ListParts."""
        tokens: dict[int, str] = {}
        marker = 0
        while True:
            listed = await self._call(
                "ListParts",
                self._s3.list_parts(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    UploadId=handle,
                    PartNumberMarker=marker,
                ),
                missing=key,
            )
            for entry in listed.get("Parts", []):
                tokens[entry["PartNumber"]] = entry["ETag"]
            if not listed.get("IsTruncated"):
                break
            marker = int(listed["NextPartNumberMarker"])
        filled: list[Part] = []
        for part in parts:
            token = part.token or tokens.get(part.number, "")
            if not token:
                raise StorageError(f"part {part.number} of {key} was never uploaded")
            filled.append(Part(part.number, part.offset, part.size, token))
        return filled

    # Whole objects

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._call(
            "PutObject",
            self._s3.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            ),
        )

    async def get(self, key: str) -> bytes:
        blocks = [block async for block in self.read(key)]
        return b"".join(blocks)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        full_key = self._key(key)
        start = max(0, start)
        if end is not None and end <= start:
            if await self.size(key) is None:
                raise ObjectMissing(key)
            return
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": full_key}
        if start > 0 or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await self._s3.get_object(**request)
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange":
                # The object exists and ``start`` is at or past its end: nothing to read.
                return
            self._fail("GetObject", exc, missing=key)
        except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._fail("GetObject", exc)
        body = response["Body"]
        try:
            while True:
                try:
                    block = await body.read(READ_BLOCK)
                except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self._fail("GetObject", exc)
                if not block:
                    break
                yield block
        finally:
            body.close()

    async def size(self, key: str) -> int | None:
        try:
            head = await self._call(
                "HeadObject", self._s3.head_object(Bucket=self.bucket, Key=self._key(key)), key
            )
        except ObjectMissing:
            return None
        return int(head["ContentLength"])

    async def delete(self, key: str) -> None:
        # S3 answers a delete of a missing key with success already.
        await self._call(
            "DeleteObject", self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        )

    async def move(self, source: str, target: str) -> None:
        source_key, target_key = self._key(source), self._key(target)
        if source_key == target_key:
            if await self.size(source) is None:
                raise ObjectMissing(source)
            return
        head = await self._call(
            "HeadObject", self._s3.head_object(Bucket=self.bucket, Key=source_key), source
        )
        size = int(head["ContentLength"])
        if size <= self.single_copy_limit:
            await self._call(
                "CopyObject",
                self._s3.copy_object(
                    Bucket=self.bucket,
                    Key=target_key,
                    CopySource={"Bucket": self.bucket, "Key": source_key},
                ),
                missing=source,
            )
        else:
            await self._copy_in_parts(source, target, size, head.get("ContentType"))
        await self.delete(source)

    async def _copy_in_parts(
        self, source: str, target: str, size: int, content_type: str | None
    ) -> None:
        source_key, target_key = self._key(source), self._key(target)
        created = await self._call(
            "CreateMultipartUpload",
            self._s3.create_multipart_upload(
                Bucket=self.bucket,
                Key=target_key,
                ContentType=content_type or "application/octet-stream",
            ),
        )
        handle = created["UploadId"]
        completed: list[CompletedPartTypeDef] = []
        try:
            for number, offset in enumerate(range(0, size, self.copy_part_size), start=1):
                last = min(offset + self.copy_part_size, size) - 1
                copied = await self._call(
                    "UploadPartCopy",
                    self._s3.upload_part_copy(
                        Bucket=self.bucket,
                        Key=target_key,
                        UploadId=handle,
                        PartNumber=number,
                        CopySource={"Bucket": self.bucket, "Key": source_key},
                        CopySourceRange=f"bytes={offset}-{last}",
                    ),
                    missing=source,
                )
                completed.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            await self._call(
                "CompleteMultipartUpload",
                self._s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=target_key,
                    UploadId=handle,
                    MultipartUpload={"Parts": completed},
                ),
            )
        except BaseException:
            with contextlib.suppress(StorageError):
                await self.abort_upload(target, handle)
            raise

    # Plumbing

    @property
    def _s3(self) -> S3Client:
        if self._client is None:
            raise StorageError("S3 storage is not started")
        return self._client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, operation: str, request: Awaitable[T], missing: str | None = None) -> T:
        """Await one S3 request, turning its failures into the storage errors.

        ``missing`` names the key to report as :class:`ObjectMissing` when S3 says the object
        (or the multipart upload) does not exist.
        """
        try:
            return await request
        except (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._fail(operation, exc, missing)

    def _fail(self, operation: str, exc: Exception, missing: str | None = None) -> NoReturn:
        if isinstance(exc, ClientError):
            code = _error_code(exc)
            if missing is not None and code in _MISSING_OBJECT_CODES | _MISSING_UPLOAD_CODES:
                raise ObjectMissing(missing) from None
            detail = f"{code}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
        else:
            detail = f"{type(exc).__name__}: {exc}"
        # ``from None``: the original exception may hold the signed request (with the key id).
        raise StorageError(f"S3 {operation} failed: {self._redact(detail)}") from None

    def _redact(self, text: str) -> str:
        for secret in (self._secret_access_key, self._access_key_id):
            if secret:
                text = text.replace(secret, "***")
        return text
