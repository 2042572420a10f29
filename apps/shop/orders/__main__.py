"""``python -m shop.orders``: run order-service."""

from shop.common.runner import load_settings, run_service
from shop.orders.app import create_app
from shop.settings import OrdersSettings


def main() -> None:
    settings = load_settings(OrdersSettings.from_env)
    run_service(settings.server, settings.telemetry, lambda: create_app(settings))


if __name__ == "__main__":
    main()
