"""Turning messages into bytes for Redis and back: msgpack, optional Fernet encryption, and a size limit.

Sans-I/O: a ``MessageCodec`` is plain computation, testable without Redis. A broadcast is encoded once and the same
bytes go to every process that holds members.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgpack

from tether.exceptions import MessageTooLarge
from tether.layers.messages import copy_message
from tether.types import Message

__all__ = ["DecodeError", "MessageCodec"]


class DecodeError(ValueError):
    """Bytes read from Redis are not a message this layer can read (corrupt, or encrypted with an unknown key)."""


def _fernet_key(secret: Any) -> bytes:
    """A Fernet key derived from any secret string or bytes (SHA-256, URL-safe base64), as channels_redis does."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or not secret:
        raise TypeError(f"symmetric_encryption_keys entries must be non-empty str or bytes, not {secret!r:.40}.")
    return base64.urlsafe_b64encode(hashlib.sha256(secret).digest())


class MessageCodec:
    """Encode a message to bytes and back.

    ``encode`` checks the message (the same rules as every layer: a dict with a ``type``, carriable values only,
    ``TypeError``/``ValueError`` otherwise), packs it with msgpack, encrypts it with the first of
    ``symmetric_encryption_keys`` when there are keys, and raises ``MessageTooLarge`` when the result is longer than
    ``max_message_size`` bytes. ``decode`` tries every key (key rotation: put the new key first, keep the old ones
    until no message encrypted with them can be left) and raises ``DecodeError`` when the bytes cannot be read.
    """

    def __init__(self, symmetric_encryption_keys: Any = None, max_message_size: int | None = None) -> None:
        self.max_message_size = max_message_size
        self._crypter = None
        if symmetric_encryption_keys:
            if isinstance(symmetric_encryption_keys, (str, bytes)) or not isinstance(
                symmetric_encryption_keys, (list, tuple)
            ):
                raise TypeError(
                    "symmetric_encryption_keys must be a list of secrets (the first encrypts, all decrypt), "
                    f"not {type(symmetric_encryption_keys).__name__}."
                )
            try:
                from cryptography.fernet import Fernet, MultiFernet
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "symmetric_encryption_keys needs the 'cryptography' package: install tether's crypto extra "
                    "(pip install -e '.[crypto]' in a clone of tether) or pip install cryptography."
                ) from exc
            self._crypter = MultiFernet([Fernet(_fernet_key(key)) for key in symmetric_encryption_keys])

    @property
    def encrypted(self) -> bool:
        return self._crypter is not None

    def encode(self, message: Message) -> bytes:
        data: bytes = msgpack.packb(copy_message(message), use_bin_type=True)
        if self._crypter is not None:
            data = self._crypter.encrypt(data)
        if self.max_message_size is not None and len(data) > self.max_message_size:
            raise MessageTooLarge(
                f"The message of type {message.get('type')!r} is {len(data)} bytes encoded; this layer accepts at "
                f"most {self.max_message_size} (max_message_size). Send a reference to the data instead, or raise "
                "max_message_size."
            )
        return data

    def decode(self, data: bytes) -> Message:
        if self._crypter is not None:
            from cryptography.fernet import InvalidToken

            try:
                data = self._crypter.decrypt(bytes(data))
            except InvalidToken:
                raise DecodeError(
                    "a message could not be decrypted with any of symmetric_encryption_keys "
                    "(was it encrypted with a key that is no longer listed, or sent unencrypted?)"
                ) from None
        try:
            message = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise DecodeError(f"a message is not valid msgpack ({type(exc).__name__}: {exc})") from None
        if not isinstance(message, dict) or "type" not in message:
            raise DecodeError(f"decoded data is not a message dict with a 'type': {message!r:.80}")
        return message
