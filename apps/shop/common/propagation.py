"""Context propagation that treats a header value which is not text as absent.

aiohttp decodes header bytes that are not UTF-8 to lone surrogates (``surrogateescape``), and
opentelemetry-api 1.45.1's ``W3CBaggagePropagator.extract`` calls ``header.encode()`` on them,
which raises ``UnicodeEncodeError``. The server instrumentation extracts before any middleware of
ours runs, so one such ``baggage`` header made every service answer 500. W3C Trace Context and
Baggage both say a header that cannot be parsed is ignored; this does that, for every propagator
the operator configured (``OTEL_PROPAGATORS``), by filtering what the getter hands them.
"""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)


def is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class TextOnlyGetter(Getter[CarrierT]):
    """The values of another getter, without those that are not encodable text."""

    def __init__(self, inner: Getter[CarrierT]) -> None:
        self._inner = inner

    def get(self, carrier: CarrierT, key: str) -> list[str] | None:
        values = self._inner.get(carrier, key)
        kept = [value for value in values or () if is_text(value)]
        return kept or None

    def keys(self, carrier: CarrierT) -> list[str]:
        return self._inner.keys(carrier)


class TextOnlyPropagator(TextMapPropagator):
    """Wraps a propagator so that extraction never sees a header value that is not text."""

    def __init__(self, inner: TextMapPropagator) -> None:
        self._inner = inner

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        return self._inner.extract(carrier, context, TextOnlyGetter(getter))

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        self._inner.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return self._inner.fields


def install_text_only_propagation() -> None:
    """Wrap the global propagator (idempotent)."""
    current = propagate.get_global_textmap()
    if not isinstance(current, TextOnlyPropagator):
        propagate.set_global_textmap(TextOnlyPropagator(current))
