"""``python -m shop.gateway``: run the gateway."""

from shop.common.runner import load_settings, run_service
from shop.gateway.app import create_app
from shop.settings import GatewaySettings


def main() -> None:
    settings = load_settings(GatewaySettings.from_env)
    run_service(settings.server, settings.telemetry, lambda: create_app(settings))


if __name__ == "__main__":
    main()
