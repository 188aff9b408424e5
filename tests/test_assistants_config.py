"""The vault's ``[assistants.NAME]`` tables (issue 15; shared/panel-format.md, *Assistants*):
read back, each bad value's `config.toml:LINE: key: message`, the examples ``vaultd init``
writes, and ``vaultd check``'s warning for a panel's assistant that is neither configured
nor a model the SDK knows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from vaultd.config import (
    CONFIG_PATH,
    UNSAFE_NAME_CHARS,
    Assistant,
    Price,
    config_toml,
    load,
    resolve_assistant,
)
from vaultd.errors import ConfigError
from vaultd.note import panel

from .conftest import run_cli


def write_config(vault: Path, text: str) -> Path:
    path = vault / CONFIG_PATH
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors(vault: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    path = write_config(vault, text)
    with pytest.raises(ConfigError) as caught:
        load(vault, environ=environ or {})
    return [line.replace(str(path), "config.toml") for line in str(caught.value).splitlines()]


GOOD = """\
answer_max_tokens = 2000

[assistants.claude]
provider = "anthropic"
model = "claude-sonnet-5-5"

[assistants.gpt]
provider = "openai"
model = "gpt-5"
api_key_env = "MY_OPENAI_KEY"
max_tokens = 800
system = "Answer as a pharmacist would."
concurrency = 4
prices = { input = 1.25, output = 10.0 }

[assistants.local-llama]
provider = "openai"
model = "llama3.3"
base_url = "http://127.0.0.1:11434/v1"
api_key_env = ""

[assistants.plain-gpt]
provider = "openai"
model = "gpt-5-mini"
"""


def test_assistants_are_read_back_with_their_defaults(vault: Path) -> None:
    write_config(vault, GOOD)
    settings = load(vault, environ={})
    assert list(settings.assistants) == ["claude", "gpt", "local-llama", "plain-gpt"]
    assert settings.assistants["claude"] == Assistant(
        provider="anthropic", model="claude-sonnet-5-5", api_key_env="ANTHROPIC_API_KEY")
    assert settings.assistants["gpt"] == Assistant(
        provider="openai", model="gpt-5", api_key_env="MY_OPENAI_KEY", max_tokens=800,
        system="Answer as a pharmacist would.", concurrency=4,
        prices=Price(input=1.25, output=10.0))
    local = settings.assistants["local-llama"]
    assert (local.base_url, local.api_key_env) == ("http://127.0.0.1:11434/v1", "")
    plain = settings.assistants["plain-gpt"]
    assert (plain.api_key_env, plain.base_url, plain.max_tokens, plain.system,
            plain.concurrency, plain.prices) == ("OPENAI_API_KEY", None, None, None, None, None)


def test_a_vaultd_table_holds_assistants_too(vault: Path) -> None:
    write_config(vault, "[vaultd]\nmodel = \"claude-haiku-4-5\"\n\n[vaultd.assistants.gpt]\n"
                        "provider = \"openai\"\nmodel = \"gpt-5\"\n")
    assert load(vault, environ={}).assistants["gpt"].model == "gpt-5"


def test_resolve_assistant_a_configured_name_else_an_anthropic_model(vault: Path) -> None:
    write_config(vault, GOOD)
    settings = load(vault, environ={})
    assert resolve_assistant(settings, "gpt") == settings.assistants["gpt"]  # max_tokens: 800
    assert resolve_assistant(settings, "local-llama").max_tokens == 2000  # answer_max_tokens
    assert resolve_assistant(settings, "claude-opus-5") == Assistant(
        provider="anthropic", model="claude-opus-5", api_key_env="ANTHROPIC_API_KEY",
        max_tokens=2000)
    # with no config at all: every name is an Anthropic model, at the default max_tokens
    bare = resolve_assistant(load(None, environ={}), "claude-sonnet-5-5")
    assert (bare.provider, bare.model, bare.max_tokens) == ("anthropic", "claude-sonnet-5-5",
                                                            4096)


def test_each_bad_value_names_its_line_and_key(vault: Path) -> None:
    assert errors(vault, (
        "[assistants.gpt]\n"                                   # 1
        "provider = \"opnai\"\n"                               # 2
        "model = \"gpt-5\"\n"                                  # 3
        "modle = \"x\"\n"                                      # 4
        "\n"
        "[assistants.nomodel]\n"                               # 6
        "provider = \"anthropic\"\n"                           # 7
        "\n"
        "[assistants.blank]\n"                                 # 9
        "provider = \"anthropic\"\n"                           # 10
        "model = \"\"\n"                                       # 11
        "max_tokens = 0\n"                                     # 12
        "concurrency = 300\n"                                  # 13
        "\n"
        "[assistants.url]\n"                                   # 15
        "provider = \"openai\"\n"                              # 16
        "model = \"m\"\n"                                      # 17
        "base_url = \"ftp://example.com/v1\"\n"                # 18
        "api_key_env = \"sk-test-SECRET-4242\"\n"              # 19
        "prices = { input = 1.0, outptu = 2.0 }\n"             # 20
        "\n"
        "[assistants.\"a:b\"]\n"                               # 22
        "provider = \"openai\"\n"                              # 23
        "model = \"m\"\n"                                      # 24
        "\n"
        "[assistants.noprovider]\n"                            # 26
        "model = \"m\"\n"                                      # 27
        "\n"
        "[assistants.creds]\n"                                 # 29
        "provider = \"openai\"\n"                              # 30
        "model = \"m\"\n"                                      # 31
        "base_url = \"https://user:hunter2@example.com/v1\"\n"  # 32
        "\n"
        "[assistants.query]\n"                                 # 34
        "provider = \"openai\"\n"                              # 35
        "model = \"m\"\n"                                      # 36
        "base_url = \"https://example.com/v1?key=abc\"\n"      # 37
        "system = 3\n"                                         # 38
    )) == [
        "config.toml:2: assistants.gpt.provider: 'opnai' is not one of anthropic, openai "
        "(did you mean `openai`?)",
        "config.toml:4: assistants.gpt.modle: unknown setting (did you mean `model`?)",
        "config.toml:6: assistants.nomodel.model: missing (e.g. model = \"gpt-5\")",
        "config.toml:11: assistants.blank.model: must be a model's name, not empty",
        "config.toml:12: assistants.blank.max_tokens: Input should be greater than 0",
        "config.toml:13: assistants.blank.concurrency: Input should be less than or equal "
        "to 256",
        "config.toml:18: assistants.url.base_url: must be an http:// or https:// URL, e.g. "
        "\"http://127.0.0.1:11434/v1\"",
        "config.toml:19: assistants.url.api_key_env: must be the NAME of the environment "
        "variable that holds the key (letters, digits and _, e.g. \"OPENAI_API_KEY\"), never "
        "the key itself; \"\" when none is needed",
        "config.toml:20: assistants.url.prices.output: Field required",
        "config.toml:20: assistants.url.prices.outptu: unknown setting (did you mean "
        "`output`?)",
        "config.toml:22: assistants.a:b: the name holds \":\", not allowed in a file name "
        f"(no {UNSAFE_NAME_CHARS} in a name)",
        "config.toml:26: assistants.noprovider.provider: missing (e.g. provider = "
        "\"openai\")",
        "config.toml:32: assistants.creds.base_url: must not hold a user name or password "
        "(the key is read from the variable `api_key_env` names)",
        "config.toml:37: assistants.query.base_url: must not hold a query or fragment (?… or "
        "#…): it is the API's base, e.g. \"https://api.openai.com/v1\"",
        "config.toml:38: assistants.query.system: Input should be a valid string",
    ]


def test_no_message_shows_a_key_or_a_password_put_in_the_config(vault: Path) -> None:
    text = ("[assistants.gpt]\nprovider = \"openai\"\nmodel = \"gpt-5\"\n"
            "api_key_env = \"sk-test-SECRET-4242\"\n"
            "base_url = \"https://me:sk-test-SECRET-4242@example.com/v1\"\n")
    shown = "\n".join(errors(vault, text))
    assert "SECRET" not in shown and shown.count("\n") == 1


def test_a_misspelt_provider_key_and_table(vault: Path) -> None:
    assert errors(vault, (
        "[assistants.gpt]\n"
        "provider = \"OpenAI\"\n"
        "model = \"gpt-5\"\n"
        "api_key_envv = \"OPENAI_API_KEY\"\n"
        "\n"
        "[assistants.claude]\n"
        "provider = \"antropic\"\n"
        "model = \"claude-sonnet-5-5\"\n"
        "base-url = \"http://x\"\n"
        "bogus = 1\n"
    )) == [
        "config.toml:2: assistants.gpt.provider: 'OpenAI' is not one of anthropic, openai "
        "(did you mean `openai`?)",
        "config.toml:4: assistants.gpt.api_key_envv: unknown setting (did you mean "
        "`api_key_env`?)",
        "config.toml:7: assistants.claude.provider: 'antropic' is not one of anthropic, "
        "openai (did you mean `anthropic`?)",
        "config.toml:9: assistants.claude.base-url: unknown setting (did you mean "
        "`base_url`?)",
        "config.toml:10: assistants.claude.bogus: unknown setting (known: provider, model, "
        "base_url, api_key_env, max_tokens, system, concurrency, prices)",
    ]
    assert errors(vault, "[assistant.gpt]\nmodel = \"gpt-5\"\n") == [
        "config.toml:1: assistant: unknown setting (did you mean `assistants`?)"]


def test_an_assistant_that_is_not_a_table(vault: Path) -> None:
    assert errors(vault, "assistants.gpt = \"gpt-5\"\n") == [
        "config.toml:1: assistants.gpt: must be a table: [assistants.gpt] with provider and "
        "model (e.g. provider = \"openai\", model = \"gpt-5\")"]
    assert errors(vault, "assistants = 3\n") == [
        "config.toml:1: assistants: Input should be a valid dictionary"]


def test_names_follow_the_panel_format_s_one_rule(vault: Path) -> None:
    assert panel.UNSAFE_NAME_CHARS is UNSAFE_NAME_CHARS  # one rule, not two copies
    for name in ("a#b", "x/y", "w\\\\z", "q?", "tab\\t"):
        lines = errors(vault, f"[assistants.\"{name}\"]\nprovider = \"openai\"\nmodel = "
                              "\"m\"\n")
        assert len(lines) == 1 and lines[0].startswith("config.toml:1: assistants.")
        assert "not allowed in a file name" in lines[0], lines
    assert errors(vault, "[assistants.\" gpt\"]\nprovider = \"openai\"\nmodel = \"m\"\n") == [
        "config.toml:1: assistants. gpt: an assistant's name must not start or end with a "
        "space"]
    assert errors(vault, "[assistants.\"\"]\nprovider = \"openai\"\nmodel = \"m\"\n") == [
        "config.toml:1: assistants.: an assistant's name must not be blank"]


def test_an_environment_variable_cannot_set_assistants(vault: Path) -> None:
    write_config(vault, GOOD)
    with pytest.raises(ConfigError) as caught:
        load(vault, environ={"VAULTD_ASSISTANTS": "{gpt = 1}"})
    assert str(caught.value) == (
        "environment variable VAULTD_ASSISTANTS: assistants: cannot be set by an environment "
        "variable: write [assistants.NAME] tables in the vault's .vaultd/config.toml (and "
        "unset the variable)")
    # beside another bad setting, both are said
    with pytest.raises(ConfigError) as caught:
        load(None, environ={"VAULTD_ASSISTANTS": "x", "VAULTD_WORKERS": "-1"})
    assert str(caught.value).splitlines() == [
        "environment variable VAULTD_WORKERS: workers: Input should be greater than or equal "
        "to 0 (default: 0)",
        "environment variable VAULTD_ASSISTANTS: assistants: cannot be set by an environment "
        "variable: write [assistants.NAME] tables in the vault's .vaultd/config.toml (and "
        "unset the variable)",
    ]


def test_vaultd_init_lists_the_examples_which_uncommented_are_valid(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = run_cli("init", str(vault), capsys=capsys)
    assert ran.code == 0
    text = (vault / CONFIG_PATH).read_text(encoding="utf-8")
    assert text == config_toml()
    assert tomllib.loads(text) == {}  # all commented out: changes nothing
    assert load(vault, environ={}).assistants == {}
    # remove the "#   " before each example line (not the prices one-liner)
    uncommented = re.sub(r"(?m)^#   (?!e\.g\. )", "", text)
    write_config(vault, uncommented)
    settings = load(vault, environ={})
    assert settings.assistants == {
        "claude": Assistant(provider="anthropic", model="claude-sonnet-5-5",
                            api_key_env="ANTHROPIC_API_KEY"),
        "gpt": Assistant(provider="openai", model="gpt-5", api_key_env="OPENAI_API_KEY",
                         prices=Price(input=1.25, output=10.0)),
        "local-llama": Assistant(provider="openai", model="llama3.3",
                                 base_url="http://127.0.0.1:11434/v1", api_key_env="",
                                 concurrency=2),
    }
    # the same with every setting uncommented too, and under a [vaultd] table
    everything = re.sub(r"(?m)^# (\w+ = )", r"\1", uncommented).replace("assistants = {}\n", "")
    write_config(vault, everything)
    assert load(vault, environ={}).assistants == settings.assistants
    nested = "[vaultd]\n" + everything.replace("[assistants.", "[vaultd.assistants.")
    write_config(vault, nested)
    assert load(vault, environ={}).assistants == settings.assistants


PANEL = ("---\nStatus: Draft\nassistants: [gtp, local-lama, claude-sonet-5-5, claude-opus-5, "
         "gpt]\n---\n"
         "\n> [!query]\n> ```query-text\n> Which drugs?\n> ```\n\n"
         "> [!measures]\n> ```measures-yaml\n> - id: named\n>   type: ai\n"
         ">   prompt: 'Is Poteligeo named? true or false'\n>   model: local-llama\n> ```\n")


def test_check_warns_of_an_assistant_neither_configured_nor_known(
    vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(vault, "model = \"gpt\"\n" + GOOD)  # the judge: an assistant
    note = vault / "panel.md"
    note.write_text(PANEL, encoding="utf-8")

    ran = run_cli("check", str(vault), capsys=capsys)

    known = "claude, gpt, local-llama, plain-gpt"
    neither = (f"is neither an assistant the vault's config.toml sets ([assistants.NAME]: "
               f"{known}) nor a model the installed anthropic SDK knows")
    assert ran.code == 0, ran.out
    assert ran.out.splitlines() == [  # gpt (configured) and claude-opus-5 (a model): no word
        f"{note}:3: warning: property `assistants`: assistant `claude-sonet-5-5` {neither} "
        "(did you mean `claude-sonnet-5-5`?)",
        f"{note}:3: warning: property `assistants`: assistant `gtp` {neither} (did you mean "
        "`gpt`?)",
        f"{note}:3: warning: property `assistants`: assistant `local-lama` {neither} (did you "
        "mean `local-llama`?)",
        "vaultd: 1 notes checked, 0 with problems, 1 with warnings",
    ]
    # with no assistants configured, the warning is the SDK's alone, as before
    path.unlink()
    ran = run_cli("check", str(note), capsys=capsys)
    sdk = "is not a model the installed anthropic SDK knows"
    assert f"{note}:3: warning: property `assistants`: assistant `gtp` {sdk}" in ran.out
    assert f"measure `named`: model `local-llama` {sdk}" in ran.out
