"""The Serve config file points at an application that exists and is an ingress."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

CONFIG = Path(__file__).resolve().parents[2] / "serve" / "serve_config.yaml"


def test_serve_config_validates_and_its_import_path_resolves() -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (application,) = config.applications
    module_name, attribute = application.import_path.split(":")
    app = getattr(importlib.import_module(module_name), attribute)
    assert type(app).__name__ == "Application"
    assert application.route_prefix == "/"
