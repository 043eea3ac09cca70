"""Configuration validation: every error is reported, each with its location in the document."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from slb.errors import ConfigError
from slb.model import Config, ConfigErrors, parse_config
from slb.node.files import load_config_file

REPO = Path(__file__).resolve().parents[4]
EXAMPLE = REPO / "config" / "slb.yaml"


def valid_document() -> dict[str, Any]:
    """A small valid configuration that each test breaks in one place."""
    return {
        "control": {"listen": "127.0.0.1:9901"},
        "virtual_servers": [
            {"name": "shop", "listen": "127.0.0.1:8080", "domains": ["shop.example.com"],
             "default": True,
             "routes": [{"match": "prefix", "path": "/api/", "priority": 10, "group": "api"},
                        {"path": "/", "group": "web"}]},
        ],
        "groups": [
            {"name": "api", "members": [{"address": "127.0.0.1:9001", "weight": 5}]},
            {"name": "web", "algorithm": "least_conn",
             "members": [{"address": "127.0.0.1:9003"}]},
        ],
    }


def errors_of(document: Any) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(document)
    return info.value.lines()


def test_valid_document_parses_into_config() -> None:
    config = parse_config(valid_document())
    assert isinstance(config, Config)
    assert [g.name for g in config.groups] == ["api", "web"]
    assert config.groups[0].members[0].weight == 5


def test_bad_member_address_is_reported_with_its_location() -> None:
    document = valid_document()
    document["groups"][1]["members"][0]["address"] = "localhost"
    assert errors_of(document) == ["groups[1].members[0].address: expected host:port"]


def test_every_field_error_is_reported_at_once() -> None:
    document = valid_document()
    document["groups"][0]["members"][0]["address"] = "127.0.0.1:http"
    document["groups"][1]["algorithm"] = "round_robin"
    document["http"] = {"header_timeout": -1}
    lines = errors_of(document)
    assert len(lines) == 3
    assert any(line.startswith("groups[0].members[0].address: invalid port") for line in lines)
    assert any(line.startswith("groups[1].algorithm: ") for line in lines)
    assert any(line.startswith("http.header_timeout: ") for line in lines)


def test_field_errors_and_reference_errors_are_reported_together() -> None:
    document = valid_document()
    document["groups"][0]["algorithm"] = "round_robin"
    document["virtual_servers"][0]["routes"][1]["group"] = "static"
    lines = errors_of(document)
    assert len(lines) == 2
    assert any(line.startswith("groups[0].algorithm: ") for line in lines)
    assert "virtual_servers[0].routes[1].group: unknown group 'static'" in lines


@pytest.mark.parametrize(("place", "location"), [
    ("top", "contorl"),
    ("group", "groups[0].wieght"),
    ("member", "groups[1].members[0].wieght"),
    ("route", "virtual_servers[0].routes[1].grop"),
])
def test_unknown_field_is_an_error_not_ignored(place: str, location: str) -> None:
    document = valid_document()
    target = {"top": document, "group": document["groups"][0],
              "member": document["groups"][1]["members"][0],
              "route": document["virtual_servers"][0]["routes"][1]}[place]
    target[location.rsplit(".", 1)[-1]] = 2
    assert f"{location}: unknown field" in errors_of(document)


def test_members_come_out_as_they_went_in_and_compare_by_value() -> None:
    document = valid_document()
    document["groups"][0]["members"].append(
        {"address": "127.0.0.1:9002", "weight": 0, "state": "drain"})
    config = parse_config(document)
    api = config.to_json()["groups"][0]["members"]
    assert api == [{"address": "127.0.0.1:9001", "weight": 5, "state": "up"},
                   {"address": "127.0.0.1:9002", "weight": 0, "state": "drain"}]
    assert [m.to_json() for m in config.groups[0].members] == api
    again = parse_config(copy.deepcopy(document))
    assert again.groups[0].members == config.groups[0].members
    assert len({*config.groups[0].members, *again.groups[0].members}) == 2
    # issue 15: 100,000 members are held by the admin; no per-member dict
    assert not hasattr(config.groups[0].members[0], "__dict__")


def test_route_to_unknown_group_is_reported() -> None:
    document = valid_document()
    document["virtual_servers"][0]["routes"][1]["group"] = "static"
    assert errors_of(document) == ["virtual_servers[0].routes[1].group: unknown group 'static'"]


def test_duplicate_group_names_are_reported() -> None:
    document = valid_document()
    document["groups"][1]["name"] = "api"
    document["virtual_servers"][0]["routes"][1]["group"] = "api"
    assert errors_of(document) == ["groups: group name 'api' is used twice"]


def test_duplicate_member_in_a_group_is_reported() -> None:
    document = valid_document()
    document["groups"][0]["members"].append({"address": "127.0.0.1:9001"})
    lines = errors_of(document)
    assert len(lines) == 1
    assert lines[0].startswith("groups[0]")
    assert "127.0.0.1:9001 is listed twice" in lines[0]


def test_two_defaults_on_one_listener_are_reported() -> None:
    document = valid_document()
    second = {"name": "blog", "listen": "127.0.0.1:8080", "domains": ["blog.example.com"],
              "default": True, "routes": [{"path": "/", "group": "web"}]}
    document["virtual_servers"].append(second)
    assert errors_of(document) == [
        "virtual_servers[1].default: 'shop' is already the default on 127.0.0.1:8080"]


def test_defaults_on_different_listeners_are_allowed() -> None:
    document = valid_document()
    document["virtual_servers"].append(
        {"name": "blog", "listen": "127.0.0.1:8081", "default": True,
         "routes": [{"path": "/", "group": "web"}]})
    assert len(parse_config(document).virtual_servers) == 2


def test_duplicate_domain_on_one_listener_is_reported_case_insensitively() -> None:
    document = valid_document()
    document["virtual_servers"].append(
        {"name": "shop2", "listen": "127.0.0.1:8080",
         "domains": ["other.example.com", "SHOP.example.com."],
         "routes": [{"path": "/", "group": "web"}]})
    assert errors_of(document) == [
        "virtual_servers[1].domains[1]: shop.example.com on 127.0.0.1:8080 already belongs to "
        "'shop'"]


def test_same_domain_on_another_listener_is_allowed() -> None:
    document = valid_document()
    document["virtual_servers"].append(
        {"name": "shop-alt", "listen": "127.0.0.1:8081", "domains": ["shop.example.com"],
         "routes": [{"path": "/", "group": "web"}]})
    assert len(parse_config(document).virtual_servers) == 2


def test_invalid_regular_expression_is_reported() -> None:
    document = valid_document()
    document["virtual_servers"][0]["routes"][0] = {"match": "regex", "path": "^/api/(v1",
                                                   "group": "api"}
    lines = errors_of(document)
    assert len(lines) == 1
    assert lines[0].startswith("virtual_servers[0].routes[0].path: invalid regular expression")


def test_prefix_route_must_start_with_a_slash() -> None:
    document = valid_document()
    document["virtual_servers"][0]["routes"][0]["path"] = "api/"
    assert errors_of(document) == ["virtual_servers[0].routes[0].path: must start with '/'"]


def test_unknown_algorithm_is_reported_with_the_allowed_ones() -> None:
    document = valid_document()
    document["groups"][0]["algorithm"] = "round_robin"
    lines = errors_of(document)
    assert len(lines) == 1
    assert lines[0].startswith("groups[0].algorithm: ")
    for name in ("wrr", "least_conn", "random2"):
        assert name in lines[0]


def test_negative_weight_is_reported() -> None:
    document = valid_document()
    document["groups"][1]["members"][0]["weight"] = -1
    lines = errors_of(document)
    assert len(lines) == 1
    assert lines[0].startswith("groups[1].members[0].weight: ")
    assert "greater than or equal to 0" in lines[0]


def test_missing_required_field_is_reported() -> None:
    document = valid_document()
    del document["virtual_servers"][0]["listen"]
    assert errors_of(document) == ["virtual_servers[0].listen: required field is missing"]


def test_document_that_is_not_a_mapping_is_refused() -> None:
    assert errors_of(["groups"]) == ["the configuration must be a mapping"]


def test_content_hash_is_equal_for_equal_content() -> None:
    first = parse_config(valid_document())
    reordered = valid_document()
    reordered["groups"][0] = dict(reversed(list(reordered["groups"][0].items())))
    reordered["version"] = 7  # the version is not content
    second = parse_config(reordered)
    assert first.content_hash() == second.content_hash()


def test_content_hash_changes_with_content() -> None:
    base = parse_config(valid_document()).content_hash()
    heavier = valid_document()
    heavier["groups"][0]["members"][0]["weight"] = 6
    moved = copy.deepcopy(valid_document())
    moved["groups"][1]["members"][0]["address"] = "127.0.0.1:9004"
    hashes = {base, parse_config(heavier).content_hash(), parse_config(moved).content_hash()}
    assert len(hashes) == 3


# -- files ---------------------------------------------------------------------------------


def test_example_configuration_file_is_valid() -> None:
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config = load_config_file(EXAMPLE)
    assert [g.name for g in config.groups] == [g["name"] for g in document["groups"]]
    assert [v.name for v in config.virtual_servers] == [
        v["name"] for v in document["virtual_servers"]]


def test_file_errors_name_the_file_and_the_location(tmp_path: Path) -> None:
    document = valid_document()
    document["groups"][1]["members"][0]["address"] = "localhost"
    document["groups"][0]["members"][0]["weight"] = -3
    path = tmp_path / "slb.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    lines = info.value.lines
    # file:line:column: location: message (the exact place: tests/unit/slb/node/test_files.py)
    at = re.escape(str(path)) + r":\d+:\d+: "
    assert any(re.fullmatch(at + r"groups\[1\]\.members\[0\]\.address: expected host:port",
                            line) for line in lines)
    assert any(re.match(at + r"groups\[0\]\.members\[0\]\.weight: ", line) for line in lines)
    assert len(lines) == 2


def test_yaml_syntax_error_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "slb.yaml"
    path.write_text("groups:\n  - name: api\n    algorithm: wrr: least_conn\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    # line 3, the second ':' (column 19) is where a mapping value is not allowed
    assert len(info.value.lines) == 1
    assert info.value.lines[0].startswith(f"{path}:3:19: invalid YAML")


def test_unclosed_flow_mapping_is_a_yaml_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "slb.yaml"
    path.write_text("groups:\n  - {name: api, members: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert len(info.value.lines) == 1
    assert info.value.lines[0].startswith(f"{path}:")
    assert "invalid YAML" in info.value.lines[0]


def test_empty_file_is_an_empty_configuration(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing configured yet\n", encoding="utf-8")
    config = load_config_file(path)
    assert config.virtual_servers == []
    assert config.groups == []
    assert config.content_hash() == parse_config({}).content_hash()


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert info.value.lines == [f"{path}: no such file"]


def test_top_level_list_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name: api\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert info.value.lines == [f"{path}:1:1: the configuration must be a mapping"]
