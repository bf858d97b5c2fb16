"""Start a canary for the challenger the continuous pipeline just deployed.

With a server (``llarapp serve``): ``POST {server_url}/v1/canary`` with ``{"percent": P,
"challenger": STORAGE_URI}`` -- the server loads the challenger at run time and sends it P % of
the traffic; a 200 means the canary runs, and the registry's ``canary`` alias then names the
challenger's version (a live canary: :func:`llarapp.pipeline.registry.register_model` leaves
``champion`` alone, and the rollout controller removes the alias when it promotes or rolls
back). Without one (a cluster), nothing is started here: the result is the request a cluster
controller carries out (patching the InferenceService's ``canaryTrafficPercent`` and storage
URI; docs/cluster.md).
"""

from __future__ import annotations

import logging
from typing import Any

from llarapp.pipeline.deploy import CHALLENGER_POINTER
from llarapp.pipeline.registry import CANARY, MODEL_NAME, registry_client
from llarapp.serving.canary import check_percent
from llarapp.serving.client import post_json

log = logging.getLogger(__name__)

DEFAULT_PERCENT = 10.0


def start_canary(
    deployment: dict[str, Any],
    server_url: str = "",
    percent: float = DEFAULT_PERCENT,
    *,
    set_alias: bool = True,
) -> dict[str, Any]:
    """Send ``percent`` of the traffic to the deployed challenger.

    Args:
        deployment: The challenger's pointer (:func:`llarapp.pipeline.deploy.deploy`'s result,
            alias ``challenger``).
        server_url: ``http://HOST:PORT`` of ``llarapp serve``; empty: a cluster (see the module
            docstring).
        percent: The challenger's share of traffic, 0 to 100.
        set_alias: After a started canary, point the ``canary`` alias of the pointer's
            registry (``tracking_uri``, ``model_name``) at the challenger's version.

    Returns:
        ``{"started", "mode" ("server" or "cluster"), "percent", "challenger" (the storage URI),
        "model_uri", "version", "model_name", "tracking_uri", "server_url", "server" (the
        server's answer), "canary_alias" (the version, or None), "note"}``.

    Raises:
        ValueError: ``deployment`` is not a challenger's pointer, ``percent`` is out of range,
            or ``server_url`` is not ``http://HOST:PORT``.
        RuntimeError: The server did not answer, or answered other than 200.
    """
    percent = check_percent(percent, "canary_percent")
    if deployment.get("alias") != "challenger" or not deployment.get("storage_uri"):
        raise ValueError(
            f"deployment of v{deployment.get('version')} has alias "
            f"{deployment.get('alias')!r}: expected the pointer of a deployed challenger "
            f"({CHALLENGER_POINTER}, alias 'challenger', with a storage_uri)"
        )
    result: dict[str, Any] = {
        "started": False,
        "percent": percent,
        "challenger": deployment["storage_uri"],
        "model_uri": deployment.get("model_uri", ""),
        "version": str(deployment["version"]),
        "model_name": deployment.get("model_name") or MODEL_NAME,
        "tracking_uri": deployment.get("tracking_uri", ""),
        "server_url": server_url,
        "server": None,
        "canary_alias": None,
    }
    if not server_url:
        note = (
            "no server_url: nothing started here; a cluster controller starts the canary from "
            "this request (challenger storage URI and percent)"
        )
        log.info("canary v%s at %s%%: %s", result["version"], percent, note)
        return {**result, "mode": "cluster", "note": note}
    host, _, port = server_url.removeprefix("http://").rstrip("/").partition(":")
    if not server_url.startswith("http://") or not host or not port.isdigit():
        raise ValueError(f"server_url={server_url!r}: expected http://HOST:PORT of llarapp serve")
    url = f"http://{host}:{port}"
    body = {"percent": percent, "challenger": deployment["storage_uri"]}
    try:
        status, answer = post_json(url, "/v1/canary", body)
    except OSError as exc:
        raise RuntimeError(f"POST {url}/v1/canary: no server answers ({exc})") from exc
    if status != 200:
        raise RuntimeError(f"POST {url}/v1/canary answered {status}: {answer}")
    result.update(started=True, server=answer)
    if set_alias:
        client, _ = registry_client(result["tracking_uri"] or None)
        client.set_registered_model_alias(result["model_name"], CANARY, result["version"])
        result["canary_alias"] = result["version"]
    note = f"canary started: v{result['version']} answers {percent:g} % of {url}'s traffic"
    log.info(note)
    return {**result, "mode": "server", "note": note}
