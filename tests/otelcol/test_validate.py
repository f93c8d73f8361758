"""`otelcol validate` on every collector configuration the chart renders, in the
environment the chart gives the pod."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.k8s.conftest import Rendered, value_set_args
from tests.otelcol.conftest import (
    CONFIG_KEY,
    GATEWAY_TIER_CONFIG_KEY,
    collector_configs,
    collector_env,
    gateway_tier_configs,
)


def validate(otelcol: Path, config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [otelcol, "validate", f"--config={config}"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.mark.parametrize("value_set", list(value_set_args()))
def test_the_real_collector_accepts_the_rendered_config(
    value_set: str, otelcol: Path, rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    configs = collector_configs(rendered)
    if value_set not in configs:
        # Not skipped: the one value set without a collector of its own is checked to be that.
        assert value_set == "external-collector", f"{value_set} renders no collector config"
        return
    config = tmp_path / CONFIG_KEY
    config.write_text(configs[value_set])
    result = validate(otelcol, config, collector_env(rendered[value_set]))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value_set", ["two-tier"])
def test_the_real_collector_accepts_the_rendered_gateway_tier_config(
    value_set: str, otelcol: Path, rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    """collector.topology=two-tier's second config, in the gateway tier's environment (the
    agents' is checked above, with the chart's k8s resolver)."""
    config = tmp_path / GATEWAY_TIER_CONFIG_KEY
    config.write_text(gateway_tier_configs(rendered)[value_set])
    env = collector_env(rendered[value_set], "collector-gateway")
    result = validate(otelcol, config, env)
    assert result.returncode == 0, result.stderr


def test_validate_fails_on_a_wrong_key(
    otelcol: Path, rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    """So the check above can fail: one misspelled key, and the Collector refuses it."""
    config = tmp_path / CONFIG_KEY
    text = collector_configs(rendered)["default"]
    assert "check_interval:" in text
    config.write_text(text.replace("check_interval:", "check_intervall:", 1))
    result = validate(otelcol, config, collector_env(rendered["default"]))
    assert result.returncode != 0
    assert "check_intervall" in result.stderr
