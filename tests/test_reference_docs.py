"""The reference pages (docs/reference/) are what docs/generate_reference.py writes from the code now, and the code
documents everything they list: every settings key, every SERVING_* variable and every CLI option has a meaning."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

_spec = importlib.util.spec_from_file_location("generate_reference", ROOT / "docs" / "generate_reference.py")
generator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generator)


def _undocumented_keys(model, skipped: frozenset[str] = frozenset()) -> list[str]:
    return [key for key, field in generator.settings_rows(model)
            if key not in skipped and not (field.description or "").strip()]


def test_every_reference_page_is_what_the_code_generates():
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "generate_reference.py"), "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_check_names_the_stale_page(tmp_path, monkeypatch, capsys):
    for name in generator.PAGES:
        shutil.copy(generator.PAGES_DIR / name, tmp_path / name)
    (tmp_path / "serving-settings.md").write_text("# Model server settings\n\nedited by hand\n")
    monkeypatch.setattr(generator, "PAGES_DIR", tmp_path)

    assert generator.main(["--check"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "docs/reference/serving-settings.md is out of date: run python docs/generate_reference.py"]


def test_every_pipeline_setting_has_a_description():
    from tasks.settings import Settings

    assert _undocumented_keys(Settings) == []


def test_every_monitoring_setting_has_a_description():
    from tasks.monitoring.settings import MonitoringSettings

    assert _undocumented_keys(MonitoringSettings) == []


def test_a_setting_without_a_description_is_caught():
    from pydantic import BaseModel, Field

    class Section(BaseModel):
        said: int = Field(1, description="documented")
        unsaid: int = 2

    class File(BaseModel):
        section: Section = Field(Section(), description="a section")

    assert _undocumented_keys(File) == ["section.unsaid"]


@pytest.mark.parametrize(("config", "module", "model_name"), [("pipeline.yaml", "tasks.settings", "Settings"),
                                                              ("monitoring.yaml", "tasks.monitoring.settings",
                                                               "MonitoringSettings")])
def test_every_key_of_the_shipped_configs_is_on_the_page(config, module, model_name):
    """Each key a user sees in configs/*.yaml is a documented key, or sits inside one (a mapping's entries)."""
    import importlib

    rows = dict(generator.settings_rows(getattr(importlib.import_module(module), model_name)))
    leaves = {key for key, field in rows.items() if generator.section_model(field) is None}

    def keys(mapping: dict, prefix: str = ""):
        for name, value in mapping.items():
            key = f"{prefix}{name}"
            yield key
            if isinstance(value, dict) and key not in leaves:
                yield from keys(value, f"{key}.")

    shipped = list(keys(yaml.safe_load((ROOT / "configs" / config).read_text())))
    page = (generator.PAGES_DIR / "configuration.md").read_text()
    assert len(shipped) > 10
    assert [key for key in shipped if key not in rows] == []
    assert [key for key in shipped if f"| `{key}` |" not in page] == []


def test_every_serving_variable_has_a_description():
    rows = generator.serving_rows()
    assert [variable for variable, _, _, meaning in rows if not (meaning or "").strip()] == []
    variables = [variable for variable, *_ in rows]
    assert {"SERVING_ADMIN_TOKEN", "SERVING_ADMIN_TOKEN_FILE", "SERVING_MODEL_ROOT"} <= set(variables)
    assert len(variables) == len(set(variables))


def test_every_cli_option_has_help():
    from flows.cli import parser as cli_parser

    parser = cli_parser()
    silent = [f"{name} {', '.join(action.option_strings)}" for name, _, command in generator.commands(parser)
              for action in generator.visible_actions(command) if not (action.help or "").strip()]
    assert silent == []


def test_the_cli_page_lists_every_command_and_option():
    from flows.cli import parser as cli_parser

    page = (generator.PAGES_DIR / "cli.md").read_text()
    found = generator.commands(cli_parser())
    assert len(found) >= 10
    for name, _, command in found:
        assert f"\n## {name}\n" in page
        for action in generator.visible_actions(command):
            assert f"python -m flows {name} " in page and action.option_strings[0] in page


def test_the_http_page_lists_every_route_with_its_responses():
    document = generator.openapi_document()
    page = (generator.PAGES_DIR / "http-api.md").read_text()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            section = page.split(f"\n## {method.upper()} {path}\n", 1)[1].split("\n## ", 1)[0]
            assert "**Auth:**" in section
            for status in operation["responses"]:
                assert f"\n| {status} |" in section
    assert "/predict" in document["paths"] and "/load" in document["paths"]


def test_the_http_page_needs_no_model_and_no_tensorflow():
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('g', {str(ROOT / 'docs' / 'generate_reference.py')!r})\n"
            "g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)\n"
            "g.http_api_page()\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def _cells(row: str) -> int:
    """Cells of a Markdown table row: pipes outside code spans that no backslash escapes."""
    outside = "".join(part for i, part in enumerate(generator.CODE_SPAN.split(row)) if i % 2 == 0)
    return outside.replace("\\|", "").count("|") - 1


@pytest.mark.parametrize("page", sorted(generator.PAGES))
def test_every_table_row_has_as_many_cells_as_its_header(page):
    widths, columns = [], None
    for line in (generator.PAGES_DIR / page).read_text().splitlines():
        if not line.startswith("|"):
            columns = None
        elif columns is None:
            columns = _cells(line)
        else:
            widths.append((_cells(line), columns, line))
    assert widths
    assert [line for cells, columns, line in widths if cells != columns] == []


def test_a_pipe_in_a_cell_is_escaped_outside_code_and_kept_inside_it():
    assert generator.cell("constant | cosine `a|b` ``c|`d``") == "constant \\| cosine `a|b` ``c|`d``"
    assert generator.cell(None) == generator.cell("") == "—"
    assert _cells("| " + generator.cell("a | b `c|d`") + " | x |") == 2


# The site's own settings that bear on these pages (mkdocs.yml): Material, tables, permalinks, strict links.
SITE = {"site_name": "reference pages", "theme": {"name": "material"}, "strict": True,
        "markdown_extensions": ["admonition", "attr_list", "def_list", "tables", {"toc": {"permalink": True}},
                                "pymdownx.superfences"],
        "validation": {"links": {"not_found": "warn", "anchors": "warn", "absolute_links": "warn",
                                 "unrecognized_links": "warn"}}}
