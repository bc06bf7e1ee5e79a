"""Database URLs, read once into libpq's own parameters: one source for every connection.

The contract's form is libpq's URI, several hosts included
(`postgresql://user@h1:5432,h2:5432/ledger?target_session_attrs=read-write`): libpq tries the
hosts in order and keeps the first that is a primary, so after a failover a new connection finds
the new primary by itself. SQLAlchemy's URL cannot hold that netloc, so the parameters are parsed
by libpq (through psycopg) and handed to SQLAlchemy as the host and port lists its psycopg
dialect passes on unchanged; direct psycopg connections (the relay's `LISTEN`) take them as a
conninfo string. SQLAlchemy's own form (`postgresql+psycopg://...?host=h1:p1&host=h2:p2`) is
read the same way, so both spellings reach the same connections.

A URL the service cannot use is a `ConfigurationError` naming its variable, found when the
settings are read: the command prints one line and exits 2, before it connects anywhere."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from ledger.core.errors import ConfigurationError

LIBPQ_SCHEMES = ("postgresql://", "postgres://")
SQLALCHEMY_SCHEME = "postgresql+psycopg://"
# Held in the URL's own fields, where SQLAlchemy masks the password when it prints a URL.
_FIELDS = ("user", "password", "dbname")
PORT_MAX = 65535


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """libpq connection parameters (keyword -> value), as libpq itself parsed them."""

    params: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str, variable: str = "LEDGER_DATABASE_URL") -> DatabaseUrl:
        try:
            if text.startswith(SQLALCHEMY_SCHEME):
                raw = _sqlalchemy_params(text)
            elif text.startswith(LIBPQ_SCHEMES):
                raw = conninfo_to_dict(text)
            else:
                raise ConfigurationError(f"{variable} must start with postgresql://")
        except (psycopg.Error, sa.exc.ArgumentError, ValueError) as exc:
            raise ConfigurationError(
                f"{variable} is not a usable URL: {_reason(exc, text)}"
            ) from None
        params = {k: str(v) for k, v in raw.items() if v is not None}
        _check_hosts_and_ports(params, variable)
        return cls(tuple(sorted(params.items())))

    def get(self, keyword: str) -> str | None:
        return dict(self.params).get(keyword)

    @property
    def hosts(self) -> list[str]:
        """`host:port` of each host, in libpq's order (for messages and logs)."""
        params = dict(self.params)
        hosts = params.get("host", "").split(",")
        ports = params.get("port", "").split(",")
        if len(ports) == 1:
            ports = ports * len(hosts)
        return [f"{h or 'localhost'}:{p or '5432'}" for h, p in zip(hosts, ports, strict=True)]

    def sqlalchemy_url(self) -> sa.URL:
        params = dict(self.params)
        fields = {k: params.pop(k, None) for k in _FIELDS}
        return sa.URL.create(
            "postgresql+psycopg",
            username=fields["user"],
            password=fields["password"],
            database=fields["dbname"],
            query=params,
        )

    def conninfo(self, defaults: Mapping[str, Any] | None = None) -> str:
        """A libpq conninfo string for a psycopg connection of our own, with `defaults` where
        the URL says nothing (as `connect_args`)."""
        return make_conninfo(**(dict(self.params) | self.connect_args(defaults or {})))

    def with_defaults(self, defaults: Mapping[str, Any]) -> DatabaseUrl:
        """This URL with `defaults` written in where it says nothing (as `connect_args`), for a
        caller that builds its connections from the URL alone."""
        params = dict(self.params) | self.connect_args(defaults)
        return DatabaseUrl(tuple(sorted((k, str(v)) for k, v in params.items())))

    def connect_args(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """Connection parameters for the driver: `defaults` (the service's timeouts, its
        application name) unless the URL sets them; startup `options` add up, the URL's last,
        so a `-c` setting the operator wrote wins."""
        params = dict(self.params)
        args = {k: v for k, v in defaults.items() if k not in params or k == "options"}
        if "options" in params and "options" in defaults:
            args["options"] = f"{defaults['options']} {params['options']}"
        return args


def _reason(exc: BaseException, text: str) -> str:
    """The parser's first line, without the password: libpq quotes the token it could not
    read, which may be the password itself (a stray `%`)."""
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    _scheme, _, rest = text.partition("://")
    userinfo, at, _ = rest.partition("@")
    _user, colon, password = userinfo.partition(":")
    if at and colon and password:
        reason = reason.replace(password, "***")
    return reason


def _sqlalchemy_params(text: str) -> dict[str, Any]:
    """SQLAlchemy's spelling, read by its own psycopg dialect into libpq parameters."""
    dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]
    _args, params = dialect.create_connect_args(sa.make_url(text))  # type: ignore[no-untyped-call]
    return dict(params)


def _check_hosts_and_ports(params: dict[str, str], variable: str) -> None:
    """libpq reads ports only when it connects; say what is wrong now. One port for several
    hosts is libpq's shorthand for that port on each: written out, as SQLAlchemy wants it."""
    hosts = params.get("host", "").split(",")
    ports = params.get("port", "").split(",")
    for port in ports:
        if port and not (port.isdigit() and 1 <= int(port) <= PORT_MAX):
            raise ConfigurationError(f"{variable} has a port that is not 1..{PORT_MAX}: {port!r}")
    if "port" in params and len(ports) != len(hosts):
        if len(ports) != 1:
            raise ConfigurationError(f"{variable} names {len(hosts)} hosts but {len(ports)} ports")
        params["port"] = ",".join(ports * len(hosts))
