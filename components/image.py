"""The one container image every component runs in, named here and nowhere else.

``Dockerfile.component`` builds it from this package; its tag is the package version
(``[project] version`` in ``pyproject.toml``), so a compiled pipeline names the image of the code
it was compiled from. Only the component's function body runs in the image (KFP inlines it);
``components`` itself is never imported there.
"""

from importlib.metadata import version

REPOSITORY = "ghcr.io/llarapp/llarapp-python"
"""Registry and name of the image; point it at your registry, then `llarapp pipeline compile`."""

IMAGE = f"{REPOSITORY}:{version('llarapp')}"
"""``REPOSITORY:VERSION``, e.g. ``ghcr.io/llarapp/llarapp-python:0.1.0`` (never ``latest``)."""
