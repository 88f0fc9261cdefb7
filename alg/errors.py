"""The one exception hierarchy of the ALG core.

Every error the core raises is an :class:`AlgError`. Callers that feed untrusted bytes
catch :class:`CodecError`; allocation failures are :class:`AllocationError`; a bad
configuration is :class:`ConfigError` and names the offending key.
"""

from __future__ import annotations


class AlgError(Exception):
    """Base of every error raised by ``alg``."""


class CodecError(AlgError):
    """Bytes that are not a valid PPTP control message or enhanced GRE header."""


class TruncatedError(CodecError):
    """Fewer bytes than the header or the declared length needs."""


class BadLengthError(CodecError):
    """The Length field disagrees with the fixed length of the message type."""


class BadMagicCookieError(CodecError):
    """The Magic Cookie is not 0x1A2B3C4D (RFC 2637 section 1.4)."""


class BadMessageTypeError(CodecError):
    """The PPTP Message Type is not 1 (control); management messages are undefined."""


class UnknownControlTypeError(CodecError):
    """The Control Message Type is outside 1..15."""


class ReservedFieldError(CodecError):
    """A field that RFC 2637 says must be zero is not."""


class BadGreHeaderError(CodecError):
    """A GRE header that is not the enhanced GRE of RFC 2637 section 4.1."""


class IcmpFormatError(CodecError):
    """An ICMP error whose quoted packet is too short or not IPv4 (RFC 792)."""


class WireError(AlgError):
    """An OpenFlow message from the switch shorter than its fields, or with lengths that
    contradict each other."""


class ProtocolError(AlgError):
    """A well-formed control message the ALG will not pass (RFC 2637 roles violated)."""


class StreamError(AlgError):
    """A control connection's byte stream cannot be followed any more."""


class BufferLimitError(StreamError):
    """More bytes held for one direction than the configured limit allows."""


class AllocationError(AlgError):
    """No free identifier (Call ID, port or public address) is left."""


class CallIdExhaustedError(AllocationError):
    """Every Call ID of a (public IP, server IP) pair is in use or held down."""


class PortExhaustedError(AllocationError):
    """Every public port (or ICMP identifier) of an address is in use."""


class LimitError(AllocationError):
    """A configured bound is reached (per inside host, per connection, or in total).

    Attributes:
        limit: the name of the option that bounds it.
    """

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(f"{message} ({limit} reached)")
        self.limit = limit


class ConfigError(AlgError):
    """A configuration value is missing or invalid.

    Attributes:
        key: the name of the offending option.
        reason: what is wrong with its value.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class RequestError(AlgError):
    """An HTTP request's query that a view cannot take (answered with 400)."""


class StoreError(AlgError):
    """The store that keeps the core's records across restarts cannot be used."""


class RecordError(StoreError):
    """A stored record holds a value of the wrong type or out of its range."""


class BpfError(AlgError):
    """A ``bpf(2)`` call failed (the GRE demultiplexer's maps and program).

    Attributes:
        errno: the system's error number.
    """

    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message)
        self.errno = errno
