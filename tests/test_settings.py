"""Settings (``importapi.settings``): every ``IMPORTAPI_*`` variable is read there and nowhere
else, a bad value names its variable, and a server's settings reach its worker processes
whole (``to_env`` and back), which the real server under ``--workers 2`` shows with a rate
limit each worker applies.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client.multiprocess import MultiProcessCollector

import importapi
from bench.soak import ProcessTarget
from importapi.settings import SERVERS, SYNCHRONOUS, ClientSettings, Limits, Settings
from importapi.storage import open_storage
from tests.helpers import wait_until

PACKAGE = Path(importapi.__file__).parent
README = PACKAGE.parent / "README.md"
CHOICES = {"server": SERVERS, "sqlite_synchronous": SYNCHRONOUS}
FIXED = {"limits.max_key_fields"}
"""Fields that are no setting: the contract's 8 key fields are the same for every server."""


def flat(settings: Settings) -> dict[str, Any]:
    """Every field of the settings, those of ``limits`` as ``limits.NAME``."""
    out = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "limits"}
    out.update({f"limits.{f.name}": getattr(settings.limits, f.name) for f in dataclasses.fields(Limits)})
    return {name: value for name, value in out.items() if name not in FIXED}


def with_fields(values: dict[str, Any]) -> Settings:
    top = {k: v for k, v in values.items() if not k.startswith("limits.")}
    limits = {k.removeprefix("limits."): v for k, v in values.items() if k.startswith("limits.")}
    return Settings(**top, limits=Limits(**limits))


def changed(name: str, default: Any) -> Any:
    """A valid value other than the default, whatever the field."""
    if name in CHOICES:
        return next(c for c in CHOICES[name] if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default + 0.5
    return f"{default}-changed"


DEFAULTS = flat(Settings())
EVERY_FIELD_CHANGED = with_fields({name: changed(name, value) for name, value in DEFAULTS.items()})


def test_a_worker_gets_every_setting_of_its_server() -> None:
    assert all(flat(EVERY_FIELD_CHANGED)[name] != value for name, value in DEFAULTS.items())
    assert Settings.from_env(EVERY_FIELD_CHANGED.to_env()) == EVERY_FIELD_CHANGED
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_every_variable_sets_one_field() -> None:
    """Each variable ``to_env`` writes is read back into its own field and no other, and
    between them they set every field."""
    seen = set()
    for variable, value in EVERY_FIELD_CHANGED.to_env().items():
        assert variable.startswith("IMPORTAPI_")
        one = flat(Settings.from_env({variable: value}))
        moved = {name for name in DEFAULTS if one[name] != DEFAULTS[name]}
        assert len(moved) == 1, (variable, moved)
        (name,) = moved
        assert one[name] == flat(EVERY_FIELD_CHANGED)[name]
        seen.add(name)
    assert seen == set(DEFAULTS)


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({"IMPORTAPI_DATABASE": "postgresql://u@db/x"}, "database", "postgresql://u@db/x"),
        ({"IMPORTAPI_PORT": "0"}, "port", 0),
        ({"IMPORTAPI_SERVER": " Granian "}, "server", "granian"),
        ({"IMPORTAPI_SQLITE_SYNCHRONOUS": "normal"}, "sqlite_synchronous", "NORMAL"),
        ({"IMPORTAPI_ACCESS_LOG": "off"}, "access_log", False),
        ({"IMPORTAPI_ACCESS_LOG": "Yes"}, "access_log", True),
        ({"IMPORTAPI_RATE_LIMIT": "2.5"}, "rate_limit", 2.5),
        ({"IMPORTAPI_RATE_BURST": "0"}, "rate_burst", 0),
        ({"IMPORTAPI_MAX_POINTS": "7"}, "limits.max_points", 7),
        ({"IMPORTAPI_HEADER_TIMEOUT": "0.25"}, "header_timeout", 0.25),
        ({"IMPORTAPI_PORT": ""}, "port", 8080),  # set but empty is not set
    ],
)
def test_each_variable_is_read_into_its_setting(env: dict[str, str], field: str, value: Any) -> None:
    assert flat(Settings.from_env(env))[field] == value


def test_the_environment_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPORTAPI_RATE_LIMIT", "2.5")
    monkeypatch.setenv("IMPORTAPI_MAX_CONCURRENT", "9")
    assert (Settings.from_env().rate_limit, Settings.from_env().max_concurrent) == (2.5, 9)
    assert Settings.from_env({}).rate_limit == 0  # a mapping given is all that is read


BAD = {
    "IMPORTAPI_PORT": ["65536", "-1", "http", "80.5"],
    "IMPORTAPI_MAX_POINTS": ["0", "-3", "many", "1e3"],
    "IMPORTAPI_RATE_BURST": ["-1", "two"],
    "IMPORTAPI_MAX_CONCURRENT": ["0"],
    "IMPORTAPI_RATE_LIMIT": ["-1", "nan", "inf", "fast"],
    "IMPORTAPI_BODY_TIMEOUT": ["0", "-5", "soon"],
    "IMPORTAPI_ACCESS_LOG": ["maybe", "2"],
    "IMPORTAPI_SERVER": ["gunicorn"],
    "IMPORTAPI_SQLITE_SYNCHRONOUS": ["SOMETIMES"],
}


@pytest.mark.parametrize(("variable", "raw"), [(v, raw) for v, raws in BAD.items() for raw in raws])
def test_a_bad_value_is_a_value_error_naming_its_variable(variable: str, raw: str) -> None:
    with pytest.raises(ValueError, match=re.escape(variable)) as refused:
        Settings.from_env({variable: raw})
    assert repr(raw) in str(refused.value)


def test_every_variable_but_free_text_refuses_a_bad_value() -> None:
    for variable, value in Settings().to_env().items():
        if variable in ("IMPORTAPI_DATABASE", "IMPORTAPI_HOST"):
            continue  # any text is a database URL or a host to try
        with pytest.raises(ValueError, match=re.escape(variable)):
            Settings.from_env({variable: f"{value}x"})


def test_overrides_win_and_none_is_no_override() -> None:
    env = {"IMPORTAPI_PORT": "9000", "IMPORTAPI_HOST": "0.0.0.0", "IMPORTAPI_MAX_POINTS": "5"}
    s = Settings.from_env(env, port=9100, host=None, database="sqlite:///elsewhere")
    assert (s.port, s.host, s.database, s.limits.max_points) == (9100, "0.0.0.0", "sqlite:///elsewhere", 5)
    assert Settings.from_env(env, limits=Limits(max_points=3)).limits.max_points == 3


def test_client_settings_come_from_their_own_variables() -> None:
    assert ClientSettings.from_env({}) == ClientSettings("http://127.0.0.1:8080", 1, None)
    env = {"IMPORTAPI_URL": "https://api.example", "IMPORTAPI_CLIENT_ID": "7", "IMPORTAPI_API_KEY": "imp_x"}
    assert ClientSettings.from_env(env) == ClientSettings("https://api.example", 7, "imp_x")
    blank = {"IMPORTAPI_URL": "", "IMPORTAPI_CLIENT_ID": "", "IMPORTAPI_API_KEY": ""}
    assert ClientSettings.from_env(blank) == ClientSettings()
    for bad in ("0", "seven"):
        with pytest.raises(ValueError, match="IMPORTAPI_CLIENT_ID"):
            ClientSettings.from_env({"IMPORTAPI_CLIENT_ID": bad})


def test_every_setting_is_in_the_readmes_configuration_table() -> None:
    table = set(re.findall(r"^\|.*$", README.read_text(), re.MULTILINE))
    documented = {v for row in table for v in re.findall(r"`(IMPORTAPI_[A-Z_]+)`", row)}
    missing = sorted(set(Settings().to_env()) - documented)
    assert not missing, f"variables missing from the README's configuration table: {missing}"


def _field_values() -> dict[str, st.SearchStrategy[Any]]:
    out: dict[str, st.SearchStrategy[Any]] = {}
    for name, default in DEFAULTS.items():
        if name in CHOICES:
            out[name] = st.sampled_from(CHOICES[name])
        elif isinstance(default, bool):
            out[name] = st.booleans()
        elif isinstance(default, int):
            out[name] = st.integers(1, 65535)
        elif isinstance(default, float):
            out[name] = st.floats(min_value=0.001, max_value=1e6)
        else:
            out[name] = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)
    return out


@hypothesis_settings(deadline=None)
@given(st.fixed_dictionaries(_field_values()).map(with_fields))
@example(EVERY_FIELD_CHANGED.replace(rate_limit=1 / 3, body_timeout=1234567.0))
def test_any_settings_survive_the_trip_to_a_worker(settings: Settings) -> None:
    assert Settings.from_env(settings.to_env()) == settings


# -- nothing else reads the environment ---------------------------------------------------


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and ast.unparse(node.value) == "os"


def _environ_writes(tree: ast.AST) -> list[ast.AST]:
    """Every statement or call that changes ``os.environ`` (or calls ``os.putenv``)."""
    writes: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            writes += [t for t in targets if isinstance(t, ast.Subscript) and _is_environ(t.value)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            mutators = ("update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__")
            if (_is_environ(node.func.value) and node.func.attr in mutators) or ast.unparse(node.func) in (
                "os.putenv",
                "os.unsetenv",
            ):
                writes.append(node)
    return sorted(writes, key=lambda n: n.lineno)


def _allowed_write(node: ast.AST) -> bool:
    """In server.py: ``os.environ.update(<settings>.to_env())``, or setting a variable that is
    not importapi's (prometheus_client's folder for the workers' counters)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update":
        arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
        return isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "to_env"
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return not str(node.slice.value).startswith("IMPORTAPI_")
    return False


def _named_variables(tree: ast.AST) -> list[ast.Constant]:
    """String constants naming an ``IMPORTAPI_*`` variable, docstrings left out."""
    docstrings = _docstrings(tree)
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("IMPORTAPI_")
        and id(node) not in docstrings
    ]
    return sorted(found, key=lambda n: n.lineno)


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}: {ast.unparse(node)}"


SOURCES = {path: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_but_settings_names_an_importapi_variable() -> None:
    offenders = [
        where(path, node)
        for path, tree in SOURCES.items()
        if path != PACKAGE / "settings.py"
        for node in _named_variables(tree)
    ]
    assert offenders == []


def test_only_the_server_writes_the_environment_and_only_the_settings_it_runs_with() -> None:
    offenders = [
        where(path, node)
        for path, tree in SOURCES.items()
        for node in _environ_writes(tree)
        if path != PACKAGE / "server.py" or not _allowed_write(node)
    ]
    assert offenders == []


def test_the_checks_see_a_read_and_a_write_where_there_is_one() -> None:
    """The two checks above find what they look for (so an empty list means something)."""
    tree = ast.parse(
        '"""IMPORTAPI_X in a docstring is prose."""\n'
        'import os\nos.environ["IMPORTAPI_PORT"] = "1"\nos.environ.update({"a": "b"})\n'
        'os.environ.update(settings.to_env())\nos.environ["OTHER"] = "x"\n'
        'x = os.environ.get("IMPORTAPI_URL")\ny = f"IMPORTAPI_{x}"\n'
    )
    assert [n.value for n in _named_variables(tree)] == ["IMPORTAPI_PORT", "IMPORTAPI_URL", "IMPORTAPI_"]
    assert [_allowed_write(w) for w in _environ_writes(tree)] == [False, False, True, True]
    assert len(SOURCES) > 40 and PACKAGE / "server.py" in SOURCES  # the whole package is looked at


# -- the real server's workers ------------------------------------------------------------


def answers_per_worker(folder: Path, scratch: Path) -> dict[str, dict[str, float]]:
    """Each worker's count of answers to data pushes by status, from its own counter files."""
    by_pid: dict[str, list[Path]] = {}
    for f in folder.glob("*.db"):
        if m := re.search(r"_(\d+)\.db$", f.name):
            by_pid.setdefault(m.group(1), []).append(f)
    out = {}
    for pid, files in by_pid.items():
        alone = scratch / pid
        shutil.rmtree(alone, ignore_errors=True)
        alone.mkdir(parents=True)
        for f in files:
            shutil.copy(f, alone / f.name)
        counts = {
            s.labels["status"]: s.value
            for family in MultiProcessCollector(None, path=str(alone)).collect()
            for s in family.samples
            if s.name == "importapi_requests_total" and s.labels.get("route") == "data"
        }
        if counts:  # the parent process serves nothing
            out[pid] = counts
    return out


@pytest.mark.e2e
def test_with_two_workers_each_applies_the_rate_limit_of_the_environment(tmp_path: Path) -> None:
    """IMPORTAPI_RATE_LIMIT and IMPORTAPI_RATE_BURST reach both worker processes: each gives the
    key its burst of 2 and then answers 429 with Retry-After (buckets are per process)."""
    counters = tmp_path / "counters"
    counters.mkdir()
    env = {
        "IMPORTAPI_RATE_LIMIT": "0.001",
        "IMPORTAPI_RATE_BURST": "2",
        "IMPORTAPI_ACCESS_LOG": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(counters),
    }
    target = ProcessTarget(f"sqlite:///{tmp_path / 'warehouse'}", tmp_path / "server.log", workers=2, env=env)
    with open_storage(target.database) as storage:
        client = storage.create_client("limited")
        _, key = storage.catalog.create_key(client.client_id)
    base = target.start()
    url = f"{base}/v2/client/{client.client_id}/table/t/data?apikey={key}"
    answers: list[httpx.Response] = []

    def both_workers_refused() -> bool:
        # one key, a new connection each time: the kernel hands them to either worker
        answers.append(
            httpx.post(url, json={"keys": ["id"], "id": len(answers)}, headers={"connection": "close"})
        )
        workers = answers_per_worker(counters, tmp_path / "scratch")
        return len(workers) == 2 and all(w.get("429", 0) >= 1 for w in workers.values())

    try:
        wait_until(both_workers_refused, timeout=60, what="a 429 from each of the two workers")
        workers = answers_per_worker(counters, tmp_path / "scratch")
    finally:
        target.kill()
    assert all(w.get("201", 0) <= 2 for w in workers.values()), workers
    assert sum(r.status_code == 201 for r in answers) <= 4
    refused = [r for r in answers if r.status_code == 429]
    assert refused and {r.status_code for r in answers} <= {201, 429}
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1 and r.json()["code"] == 429
