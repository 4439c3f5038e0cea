"""Turning messages into bytes for Redis and back: msgpack, optional Fernet encryption, and a size limit.

Sans-I/O: a ``MessageCodec`` is plain computation, testable without Redis. A broadcast is encoded once and the same
bytes go to every process that holds members.

With ``symmetric_encryption_keys`` the codec does more than hide the message. What a frame's plain header says
(where it goes, until when) can be rewritten by anyone who can write to Redis, so the ciphertext carries what must
not be: the **seal**, ``c:<channel>`` for a direct send or ``g:<group>`` for a group send, before the msgpack bytes
(``<seal>|<msgpack>``, encrypted together). ``decode`` is told where the message was found and refuses one sealed
for somewhere else (``MisroutedMessage``), and refuses one whose Fernet timestamp is older than ``max_age`` seconds
(``StaleMessage``). The codec also makes and checks the **membership tags** that authenticate the group members
stored in Redis (``member_entry``, ``member_channel``; the stored form is in ``storage.py``). Without keys none of
this happens: no seal, no tag, no cost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final

import msgpack

from tether.exceptions import MessageTooLarge
from tether.layers.messages import copy_message
from tether.layers.redis.storage import MEMBER_TAG
from tether.types import Message

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = ["TO_CHANNEL", "TO_GROUP", "DecodeError", "MessageCodec", "MisroutedMessage", "StaleMessage"]

#: The kind of destination a seal names: a channel (a direct send) or a group (a group send).
TO_CHANNEL: Final = "c"
TO_GROUP: Final = "g"

#: Bytes of HMAC-SHA256 kept in a membership tag: 96 bits, 16 characters of URL-safe base64.
_TAG_BYTES = 12


class DecodeError(ValueError):
    """Bytes read from Redis are not a message this layer can read (corrupt, or encrypted with an unknown key)."""

    #: The ``stats()`` counter a layer counts this refusal under.
    counter: ClassVar[str] = "decode_errors"


class MisroutedMessage(DecodeError):
    """An encrypted message found somewhere it was not sent to: its seal names another channel or group (the frame
    was copied or re-labelled in Redis)."""

    counter: ClassVar[str] = "refused_misrouted"


class StaleMessage(DecodeError):
    """An encrypted message older than the codec's ``max_age`` (a frame replayed after its time)."""

    counter: ClassVar[str] = "refused_stale"


def _secret_bytes(secret: Any) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or not secret:
        raise TypeError(f"symmetric_encryption_keys entries must be non-empty str or bytes, not {secret!r:.40}.")
    return secret


def _fernet_key(secret: bytes) -> bytes:
    """A Fernet key derived from a secret (SHA-256, URL-safe base64), as channels_redis does."""
    return base64.urlsafe_b64encode(hashlib.sha256(secret).digest())


def _tag_key(secret: bytes) -> bytes:
    """The membership-tag key of a secret: not the cipher key, so a tag reveals nothing about the other."""
    return hashlib.sha256(b"tether membership tag|" + secret).digest()


class MessageCodec:
    """Encode a message to bytes and back.

    ``encode`` checks the message (the same rules as every layer: a dict with a ``type``, carriable values only,
    ``TypeError``/``ValueError`` otherwise), packs it with msgpack, seals and encrypts it with the first of
    ``symmetric_encryption_keys`` when there are keys, and raises ``MessageTooLarge`` when the result is longer than
    ``max_message_size`` bytes. ``decode`` tries every key (key rotation: put the new key first, keep the old ones
    until no message encrypted with them can be left) and raises ``DecodeError`` when the bytes cannot be read,
    ``MisroutedMessage`` when the seal names another destination than the one given, ``StaleMessage`` when the
    message is older than ``max_age`` seconds (by ``clock``, wall-clock seconds).
    """

    def __init__(
        self,
        symmetric_encryption_keys: Any = None,
        max_message_size: int | None = None,
        *,
        max_age: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_age = max_age
        self.clock = clock
        self._crypter: MultiFernet | None = None
        self._tag_keys: list[bytes] = []
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
            secrets = [_secret_bytes(key) for key in symmetric_encryption_keys]
            self._crypter = MultiFernet([Fernet(_fernet_key(secret)) for secret in secrets])
            self._tag_keys = [_tag_key(secret) for secret in secrets]

    @property
    def encrypted(self) -> bool:
        return self._crypter is not None

    # Messages ------------------------------------------------------------------------------------------------------

    def encode(self, message: Message, kind: str = "", name: str = "") -> bytes:
        """The bytes of ``message``; when encrypting, sealed for the destination ``kind`` (``TO_CHANNEL`` or
        ``TO_GROUP``) ``name``."""
        data: bytes = msgpack.packb(copy_message(message), use_bin_type=True)
        if self._crypter is not None:
            data = self._crypter.encrypt_at_time(b"%s:%s|" % (kind.encode(), name.encode()) + data, int(self.clock()))
        if self.max_message_size is not None and len(data) > self.max_message_size:
            raise MessageTooLarge(
                f"The message of type {message.get('type')!r} is {len(data)} bytes encoded; this layer accepts at "
                f"most {self.max_message_size} (max_message_size). Send a reference to the data instead, or raise "
                "max_message_size."
            )
        return data

    def decode(self, data: bytes, kind: str = "", name: str = "", *, check_age: bool = True) -> Message:
        """The message in ``data``, found at the destination ``kind`` ``name`` (checked against the seal when
        encrypting, and against ``max_age`` unless ``check_age`` is False: a dead letter kept for days is read
        back on purpose)."""
        if self._crypter is not None:
            expected = b"%s:%s" % (kind.encode(), name.encode())
            data = self._unseal(self._crypter, bytes(data), expected, self.max_age if check_age else None)
        try:
            message = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise DecodeError(f"a message is not valid msgpack ({type(exc).__name__}: {exc})") from None
        if not isinstance(message, dict) or "type" not in message:
            raise DecodeError(f"decoded data is not a message dict with a 'type': {message!r:.80}")
        return message

    def _unseal(self, crypter: MultiFernet, token: bytes, expected: bytes, max_age: int | None) -> bytes:
        """Decrypt ``token`` and check its age (unless ``max_age`` is None) and seal; returns the msgpack bytes."""
        from cryptography.fernet import InvalidToken

        try:
            if max_age is None:
                plain = crypter.decrypt(token)
            else:
                plain = crypter.decrypt_at_time(token, max_age, int(self.clock()))
        except InvalidToken:
            raise self._undecryptable(crypter, token) from None
        seal, bar, packed = plain.partition(b"|")
        if not bar or seal[:2] not in (b"c:", b"g:", b":"):
            raise DecodeError(
                "a message carries no destination seal (sent by a tether release older than sealed frames? every "
                "process sharing symmetric_encryption_keys must run the same release)"
            )
        if seal != expected:
            raise MisroutedMessage(
                f"a message sealed for {seal.decode('ascii', 'replace')!r} was found at {expected.decode('ascii')!r} "
                "(copied or re-labelled in Redis)"
            )
        return packed

    def _undecryptable(self, crypter: MultiFernet, token: bytes) -> DecodeError:
        """Why ``token`` did not decrypt: too old (its signature holds) or not ours."""
        from cryptography.fernet import InvalidToken

        if self.max_age is not None:
            try:
                sent_at = crypter.extract_timestamp(token)  # checks the signature
            except InvalidToken:
                pass
            else:
                return StaleMessage(
                    f"a message encrypted {int(self.clock()) - sent_at}s ago is older than {self.max_age}s "
                    "(expiry plus the margin): replayed, or the clocks of the machines differ"
                )
        return DecodeError(
            "a message could not be decrypted with any of symmetric_encryption_keys "
            "(was it encrypted with a key that is no longer listed, or sent unencrypted?)"
        )

    # Membership tags -----------------------------------------------------------------------------------------------

    def member_entry(self, group: str, channel: str) -> str:
        """What ``group_add`` stores for ``channel`` in ``group``: the name, tagged with the first key when
        encrypting."""
        if not self._tag_keys:
            return channel
        return channel + MEMBER_TAG + self._tag(self._tag_keys[0], group, channel)

    def member_forms(self, group: str, channel: str) -> list[str]:
        """Every entry that may stand for ``channel`` in ``group``: untagged (stored by a layer without keys, or an
        older release) and tagged by each key; ``group_add`` replaces them, ``group_discard`` removes them all."""
        return [channel, *(channel + MEMBER_TAG + self._tag(key, group, channel) for key in self._tag_keys)]

    def member_channel(self, group: str, entry: str) -> str | None:
        """The channel a stored member ``entry`` of ``group`` stands for; None when encrypting and its tag is
        missing or made with none of the keys (forged, or added before tags existed)."""
        if not self._tag_keys:
            return entry
        channel, mark, tag = entry.partition(MEMBER_TAG)
        if not mark:
            return None
        for key in self._tag_keys:
            if hmac.compare_digest(tag, self._tag(key, group, channel)):
                return channel
        return None

    @staticmethod
    def _tag(key: bytes, group: str, channel: str) -> str:
        digest = hmac.new(key, b"%s|%s" % (group.encode(), channel.encode()), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_TAG_BYTES]).decode("ascii")
