"""``hashkit serve``: a long-running search service over one index (FastAPI on uvicorn).

One concept per module:

- :mod:`hashkit.serve.snapshot`: an index, its store and labels loaded as one consistent
  snapshot, and :func:`~hashkit.serve.snapshot.refresh_snapshot`, which decides when to load a
  new one;
- :mod:`hashkit.serve.service`: settings, the model, the reload watcher;
- :mod:`hashkit.serve.batching`: queries that arrive together, encoded and searched together;
- :mod:`hashkit.serve.queries`: codes (hex/base64) and uploaded images to query inputs;
- :mod:`hashkit.serve.encoder`: images to codes with the model held once;
- :mod:`hashkit.serve.thumbnails`: stored images by item id only;
- :mod:`hashkit.serve.monitoring`: Prometheus metrics;
- :mod:`hashkit.serve.schemas` and :mod:`hashkit.serve.app`: the HTTP API and the web page
  (``static/``).

Needs the ``serve`` extra (``pip install hashkit[serve]``).
"""

from hashkit.serve.app import create_app
from hashkit.serve.service import ServeSettings, Service

__all__ = ["ServeSettings", "Service", "create_app"]
