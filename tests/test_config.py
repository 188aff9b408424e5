"""Settings: the vault's config.toml, its errors (file, line, key, hint), the generated file,
and the README's table of them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from vaultd import config
from vaultd.config import CONFIG_PATH, Settings, config_toml, load
from vaultd.errors import ConfigError

from .conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = load(None, environ={})


def write_config(vault: Path, text: str) -> Path:
    path = vault / CONFIG_PATH
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors(vault: Path, text: str) -> list[str]:
    path = write_config(vault, text)
    with pytest.raises(ConfigError) as caught:
        load(vault, environ={})
    return [line.replace(str(path), "config.toml") for line in str(caught.value).splitlines()]


def test_errors_name_the_file_line_and_key(vault: Path) -> None:
    assert errors(vault, (
        "# my settings\n"
        "model = \"claude-haiku-4-5\"\n"
        "concurrency = 0\n"
        "\n"
        "max_token = 5\n"
        "bogus = 1\n"
        "js_time_limit = \"soon\"\n"
        "property_prefix = \"-x\"\n"
        "report_path = \"../outside.md\"\n"
    )) == [
        "config.toml:3: concurrency: Input should be greater than or equal to 1 (default: 8)",
        "config.toml:5: max_token: unknown setting (did you mean `max_tokens`?)",
        "config.toml:6: bogus: unknown setting (known: " + ", ".join(Settings.model_fields)
        + ")",
        "config.toml:7: js_time_limit: Input should be a valid number, unable to parse string "
        "as a number (default: 2.0)",
        "config.toml:8: property_prefix: must start with a letter or _, then letters, digits, "
        "_ or - (default: \"eval_\")",
        "config.toml:9: report_path: must be a path inside the vault, relative to it "
        "(default: \"vaultd report.md\")",
    ]


def test_errors_under_a_vaultd_table_and_in_prices(vault: Path) -> None:
    assert errors(vault, (
        "[vaultd]\n"
        "workers = 1000\n"
        "\n"
        "[vaultd.prices.\"claude-x\"]\n"
        "input = -1\n"
        "outptu = 2\n"
    )) == [
        "config.toml:2: workers: Input should be less than or equal to 256 (default: 0)",
        "config.toml:4: prices.claude-x.output: Field required",
        "config.toml:5: prices.claude-x.input: Input should be greater than or equal to 0",
        "config.toml:6: prices.claude-x.outptu: unknown setting (did you mean `output`?)",
    ]


def test_a_toml_syntax_error_names_its_line(vault: Path) -> None:
    assert errors(vault, "model = \"x\"\nworkers = \n") == [
        "config.toml:2: Invalid value"]
    assert errors(vault, "model = [\n") == ["config.toml:1: Invalid value"]


def test_a_setting_outside_the_vaultd_table_is_an_error(vault: Path) -> None:
    assert errors(vault, "workers = 2\n[vaultd]\nmodel = \"x\"\n") == [
        "config.toml:1: workers: outside the [vaultd] table (move it under [vaultd], or put "
        "every setting at the top level)"]


def test_the_environment_and_flags_say_where_a_bad_value_came_from(vault: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(vault, {"workers": -1}, environ={"VAULTD_CONCURRENCY": "many"})
    assert str(caught.value).splitlines() == [
        "environment variable VAULTD_CONCURRENCY: concurrency: Input should be a valid "
        "integer, unable to parse string as an integer (default: 8)",
        "--workers: workers: Input should be greater than or equal to 0 (default: 0)",
    ]


def test_good_settings_load(vault: Path) -> None:
    write_config(vault, "[vaultd]\nproperty_prefix = \"score-\"\nreport_path = \"Reports/v.md\"\n"
                        "[vaultd.prices.\"m\"]\ninput = 1.0\noutput = 2.0\n")
    settings = load(vault, environ={})
    assert settings.property_prefix == "score-" and settings.report_path == "Reports/v.md"
    assert settings.prices["m"].output == 2.0


def test_the_generated_config_documents_every_setting_and_changes_nothing(vault: Path) -> None:
    text = config_toml()
    assert tomllib.loads(text) == {}
    write_config(vault, text)
    assert load(vault, environ={}) == DEFAULTS
    for name, info in Settings.model_fields.items():
        assert f"# {info.description}\n# {name} = " in text, name
    # every setting uncommented gives the defaults back: the file says what they are
    uncommented = re.sub(r"(?m)^# (\w+ = )", r"\1", text)
    assert set(tomllib.loads(uncommented)) == set(Settings.model_fields)
    write_config(vault, uncommented)
    assert load(vault, environ={}) == DEFAULTS


def test_the_example_in_the_generated_config_is_valid(vault: Path) -> None:
    (example,) = re.findall(r"(?m)^#   e\.g\. (prices = .*)$", config_toml())
    write_config(vault, example + "\n")
    assert load(vault, environ={}).prices["claude-sonnet-5-5"].input == 3.0


def test_the_readme_lists_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]*) \|", table,
                                                         re.M)}
    assert list(rows) == list(Settings.model_fields)
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = rows[name].strip().strip("`")
        assert shown == (config._toml(default) if not isinstance(default, str)
                         else default), name


def test_check_reports_the_vault_s_config_too(vault: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(vault, "workers = 2\nconcurrensy = 3\n")
    ran = run_cli("check", str(vault), capsys=capsys)
    assert ran.code == 1
    assert ran.out.splitlines() == [
        f"{path}:2: concurrensy: unknown setting (did you mean `concurrency`?)",
        "vaultd: 0 notes checked, 1 with problems",
    ]
