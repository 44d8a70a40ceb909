from pathlib import Path

from hub.config_check import check_config_file
from hub.settings import DEFAULT_CONFIG_FILE


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_configuration_is_valid():
    assert check_config_file(DEFAULT_CONFIG_FILE) == []


def test_a_bad_value_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "# comment\nhub:\n  host: 127.0.0.1\n  port: seventy\n")
    [problem] = check_config_file(path)
    assert problem.startswith(f"{path}:4: hub.port")


def test_an_unknown_key_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "hub:\n  max_page_size: 10\n  databse_url: sqlite://\n")
    [problem] = check_config_file(path)
    assert problem.startswith(f"{path}:3: hub.databse_url")


def test_broken_yaml_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "hub:\n  host: [unclosed\n  port: 1\n")
    [problem] = check_config_file(path)
    assert "not valid YAML" in problem and problem.startswith(f"{path}:")


def test_a_missing_file_is_reported(tmp_path):
    [problem] = check_config_file(tmp_path / "absent.yaml")
    assert "cannot be read" in problem


def test_a_password_in_the_file_is_refused(tmp_path):
    path = write(tmp_path, "hub:\n  database_url: postgresql+psycopg://hub:s3cret@db/hub\n")
    [problem] = check_config_file(path)
    assert problem.startswith(f"{path}:2: hub.database_url") and "environment" in problem
    assert "s3cret" not in problem
