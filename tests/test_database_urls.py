"""LEDGER_DATABASE_URL in libpq's own form, several hosts included (contract 9.3): every command
connects through it to whichever host is the primary, and a URL a command cannot use is one line
on stderr and exit 2, never a traceback, never the password."""

from __future__ import annotations

import asyncio
import subprocess

import psycopg
import pytest

from ledger.core import migrate
from ledger.core.dburl import DatabaseUrl
from ledger.core.errors import ConfigurationError
from ledger.core.settings import load_settings
from ledger.embedded import LOOPBACK, free_port
from tests.conftest import _admin_url
from tests.processes import LEDGER, ledger_env

SECRET = "s3cr%zzet"  # a stray `%`: libpq quotes the token it cannot decode


def two_hosts(url: str) -> str:
    """`url` (one host) as a two-host URL whose first host has nothing listening."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    hosts = f"{LOOPBACK}:{free_port()},{info['host']}:{info['port']}"
    return f"postgresql://{info['user']}@{hosts}/{info['dbname']}?target_session_attrs=read-write"


async def ledger(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [LEDGER, *args],
        env=ledger_env(url, LEDGER_LOG_LEVEL="warning"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_libpq_and_sqlalchemy_spellings_read_the_same() -> None:
    libpq = DatabaseUrl.parse(
        "postgresql://app:p%40ss@h1:5432,h2:5433/ledger?target_session_attrs=read-write"
    )
    alchemy = DatabaseUrl.parse(
        "postgresql+psycopg://app:p%40ss@/ledger?host=h1:5432&host=h2:5433"
        "&target_session_attrs=read-write"
    )
    assert libpq == alchemy
    assert libpq.hosts == ["h1:5432", "h2:5433"]
    url = libpq.sqlalchemy_url()
    assert (url.username, url.password, url.database) == ("app", "p@ss", "ledger")
    assert url.query == {"host": "h1,h2", "port": "5432,5433", "target_session_attrs": "read-write"}
    assert "p@ss" not in repr(url)
    conninfo = psycopg.conninfo.conninfo_to_dict(libpq.conninfo({"connect_timeout": 5}))
    assert conninfo["host"] == "h1,h2" and conninfo["connect_timeout"] == "5"
    # one port for several hosts is libpq's shorthand for that port on each
    assert DatabaseUrl.parse("postgresql:///db?host=a,b&port=6432").hosts == ["a:6432", "b:6432"]


def test_what_the_url_says_wins_over_the_service_defaults() -> None:
    url = DatabaseUrl.parse("postgresql://u@h/db?connect_timeout=2&options=-c%20work_mem%3D8MB")
    args = url.connect_args({"connect_timeout": 5, "options": "-c timezone=UTC", "keepalives": 1})
    assert args == {"options": "-c timezone=UTC -c work_mem=8MB", "keepalives": 1}


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("LEDGER_DATABASE_URL", "mysql://u@h/db", "must start with postgresql://"),
        ("LEDGER_DATABASE_URL", f"postgresql://u:{SECRET}@h/db", "percent-encoded"),
        ("LEDGER_DATABASE_URL", "postgresql://u@h/db?nonsense=1", "nonsense"),
        ("LEDGER_DATABASE_URL", "postgresql://u@h1:5432,h2:70000/db", "70000"),
        ("LEDGER_DATABASE_URL", "postgresql:///db?host=a,b,c&port=1,2", "3 hosts but 2 ports"),
        ("LEDGER_DATABASE_URL", "postgresql+psycopg://u@/db?host=h:1&host=i:x", "port"),
        ("LEDGER_DATABASE_READ_URL", "postgresql://u@h:0/db", "LEDGER_DATABASE_READ_URL"),
        ("LEDGER_DATABASE_DIRECT_URL", "http://h/db", "LEDGER_DATABASE_DIRECT_URL"),
    ],
)
def test_an_unusable_url_is_named_in_one_line(variable: str, value: str, said: str) -> None:
    env = {"LEDGER_DATABASE_URL": "postgresql://u@h/db", variable: value}
    with pytest.raises(ConfigurationError) as raised:
        load_settings(env)
    message = str(raised.value)
    assert said in message and variable in message
    assert "\n" not in message and SECRET not in message and "zzet" not in message


async def test_every_command_runs_through_a_host_list_whose_first_host_is_down(
    pg_server: str, template_db: str
) -> None:
    """A fresh database migrated by `ledger db upgrade` through `dead,live`; then `verify` and
    `audit verify` on the same URL (each `ledger` command reads the URL the same way: these
    three start a few seconds each, so the others are left to the tests of their own)."""
    name = f"hosts_{free_port()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = two_hosts(_admin_url(pg_server, name))
    upgraded = await ledger(url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == migrate.head_revision()
    for args in (("verify",), ("audit", "verify")):
        result = await ledger(url, *args)
        assert result.returncode == 0, (args, result.stderr)


@pytest.mark.parametrize("command", [("db", "upgrade"), ("verify",)])
async def test_no_host_to_connect_to_is_one_line_and_exit_2(command: tuple[str, ...]) -> None:
    url = (
        f"postgresql://ledger:{SECRET.replace('%zz', '')}@{LOOPBACK}:{free_port()},"
        f"{LOOPBACK}:{free_port()}/ledger?target_session_attrs=read-write"
    )
    result = await ledger(url, *command)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ledger: "), result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr


async def test_a_url_that_cannot_be_read_stops_the_command_before_it_connects() -> None:
    result = await ledger(f"postgresql://u:{SECRET}@{LOOPBACK}:1/db", "serve")
    assert result.returncode == 2
    assert result.stderr.startswith("ledger: LEDGER_DATABASE_URL is not a usable URL")
    assert len(result.stderr.strip().splitlines()) == 1 and "zzet" not in result.stderr
