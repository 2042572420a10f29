"""What the tests (``tests/``) and the scripts for users (``scripts/``, ``load/``) share: the test orders
and cards, the compose stack's published ports and ``.env``, the services as processes, the recording OTLP
receiver, the Collector and Prometheus as processes, a private PostgreSQL server, and the Kubernetes manifests
and charts.

Importing this package imports nothing else: ``orders``, ``compose`` and ``postgres`` are standard library
only (``make demo`` and ``make smoke`` run on a bare ``python3``; so can a script that starts PostgreSQL), while
``processes``, ``otlp_sink``, ``backends`` and ``kubernetes`` need the dev virtualenv.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
