"""Request bodies validated by pydantic, answered with the shop's own 422.

pydantic reports every invalid field at once (msgspec stops at the first), and the
services keep their own wording: each field's messages sit in one table, looked up
by the kind of error pydantic found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, StringConstraints, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from shop.common.errors import ApiError

MAX_TEXT_LENGTH = 200
# Unicode categories Cc (control characters) and Cs (surrogates): a lone surrogate cannot be
# encoded as UTF-8, so no store can hold it, and control characters have no place in a name.
UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

# The kinds of error a field's messages are looked up by.
ErrorKind = Literal["required", "type", "value"]
FieldMessages = Mapping[ErrorKind, str]  # a kind not listed gets the "value" message
# Errors raised by the shop's own validators: their text is the 422's message as it stands.
OWN_ERRORS = frozenset({"unstorable_text", "luhn"})


def refuse_unstorable(value: Any) -> Any:
    """Runs before stripping, so a control character at either end is refused too."""
    if isinstance(value, str) and UNSTORABLE.search(value):
        raise PydanticCustomError("unstorable_text", "must not contain control characters or unpaired surrogates")
    return value


# Every free-text field of every service: stripped, 1 to 200 characters, storable.
Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH),
    BeforeValidator(refuse_unstorable),
]
TEXT_MESSAGES: FieldMessages = {
    "required": "required string",
    "type": "must be a string",
    "value": f"must be 1 to {MAX_TEXT_LENGTH} characters",
}


def _kind(error: ErrorDetails) -> ErrorKind:
    if error["type"] == "missing" or error["input"] is None:
        return "required"
    if error["type"].endswith("_type"):  # string_type, int_type, float_type: the JSON type is wrong
        return "type"
    return "value"


Model = TypeVar("Model", bound=BaseModel)


def validate_body(
    model: type[Model], payload: dict[str, Any], messages: Mapping[str, FieldMessages], summary: str | None = None
) -> Model:
    """``payload`` as ``model``, or a 422 naming every invalid field with its message.

    The 422's message is ``summary``, or by default "Invalid fields: " and their names.
    """
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors():
            field = str(error["loc"][0])
            if field in problems:
                continue
            if error["type"] in OWN_ERRORS:
                problems[field] = error["msg"]
            else:
                kinds = messages[field]
                problems[field] = kinds.get(_kind(error), kinds["value"])
        raise ApiError(
            422,
            "validation_failed",
            summary or "Invalid fields: " + ", ".join(sorted(problems)) + ".",
            details={"fields": problems},
        ) from None
