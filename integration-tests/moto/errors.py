"""The AWS error answers the stand-in extensions raise."""

from moto.core.exceptions import ServiceException


def error(code, message):
    """An AWS error answer with `code` (the exception name SDKs match on) and `message`."""

    class Error(ServiceException):
        pass

    Error.code = code
    return Error(message)
