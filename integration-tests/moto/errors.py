"""The AWS error answers the stand-in extensions raise."""

from moto.core.exceptions import ServiceException


def error(code, message, **members):
    """An AWS error answer with `code` (the exception name SDKs match on), `message`, and
    the exception's other members as its model names them."""

    class Error(ServiceException):
        pass

    Error.code = code
    raised = Error(message)
    for name, value in members.items():
        setattr(raised, name, value)
    return raised
