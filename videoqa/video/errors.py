"""Typed video errors. Each says what was wrong and what to change; `code` and `http_status` let the gateway
map them to responses in one place. They pickle cleanly, so they cross the worker-process boundary intact."""

from __future__ import annotations


class VideoError(Exception):
    """Base class: the input could not be turned into frames."""

    code = "video_error"
    http_status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAVideoError(VideoError):
    code = "not_a_video"
    http_status = 415


class UnsupportedFormatError(VideoError):
    code = "unsupported_format"
    http_status = 415


class UnsupportedCodecError(VideoError):
    code = "unsupported_codec"
    http_status = 415


class NoVideoStreamError(VideoError):
    code = "no_video_stream"
    http_status = 422


class TooManyStreamsError(VideoError):
    code = "too_many_streams"
    http_status = 422


class VideoTooLargeError(VideoError):
    """Too many bytes or too many pixels per frame."""

    code = "video_too_large"
    http_status = 413


class VideoTooLongError(VideoError):
    code = "video_too_long"
    http_status = 422


class CorruptVideoError(VideoError):
    """Truncated or damaged data."""

    code = "corrupt_video"
    http_status = 422


class DecodeTimeoutError(VideoError):
    code = "decode_timeout"
    http_status = 422


class DecoderCrashedError(VideoError):
    """The decoder process died (crash or memory cap); the pool replaced it."""

    code = "decoder_crashed"
    http_status = 422
