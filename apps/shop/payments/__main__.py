"""``python -m shop.payments``: run payment-service."""

from shop.common.runner import load_settings, run_service
from shop.payments.app import create_app
from shop.settings import PaymentsSettings


def main() -> None:
    settings = load_settings(PaymentsSettings.from_env)
    run_service(settings.server, settings.telemetry, lambda: create_app(settings))


if __name__ == "__main__":
    main()
