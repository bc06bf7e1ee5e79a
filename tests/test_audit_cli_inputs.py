"""`ledger audit verify-proof` and `ledger audit verify --checkpoints` answer 0 or 1 (contract
9.1): any input file that does not verify, whatever it holds or however it cannot be read, is
exit 1 with one line saying why, never a traceback; 2 only for a usage error.

The named cases run the real command; the property tests run its `main` in this process (the
same code, without a process start per example) over arbitrary bytes and arbitrary JSON in
each file in turn, the other files staying genuine.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ledger.cli.main import main
from ledger.core.settings import Settings
from tests.audit_helpers import CLI_TIMEOUT_SECONDS, LEDGER, cli_env
from tests.audit_merkle_helpers import (
    batch_of_transfers,
    deliver_to_file,
    funded_accounts,
    seal_and_checkpoint,
    write_public_key,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@dataclass
class Inputs:
    record: Path
    proof: Path
    checkpoint: Path
    public_key: Path
    checkpoints: Path
    db_url: str

    def proof_args(self, **changed: Path) -> list[str]:
        files = {
            "record": self.record,
            "proof": self.proof,
            "checkpoint": self.checkpoint,
            "public_key": self.public_key,
            **changed,
        }
        args = ["audit", "verify-proof"]
        for name, path in files.items():
            args += [f"--{name.replace('_', '-')}", str(path)]
        return args

    def checkpoints_args(self, **changed: Path) -> list[str]:
        file = changed.get("checkpoints", self.checkpoints)
        key = changed.get("public_key", self.public_key)
        return ["audit", "verify", "--checkpoints", str(file), "--public-key", str(key)]


@pytest.fixture
async def inputs(client: httpx.AsyncClient, settings: Settings, tmp_path: Path) -> Inputs:
    source, target = await funded_accounts(client)
    await batch_of_transfers(client, source, target, 3)
    await seal_and_checkpoint(settings)
    item = (await client.get("/v1/audit", params={"limit": 1})).json()["data"][0]
    record = tmp_path / "record.json"
    record.write_text(json.dumps(item))
    proof = tmp_path / "proof.json"
    proof.write_text((await client.get(f"/v1/audit/records/{item['id']}/proof")).text)
    checkpoint = tmp_path / "checkpoint.json"
    checkpoint.write_text((await client.get("/v1/audit/checkpoints/latest")).text)
    checkpoints = tmp_path / "checkpoints.jsonl"
    await deliver_to_file(settings, checkpoints)
    found = Inputs(
        record,
        proof,
        checkpoint,
        write_public_key(tmp_path),
        checkpoints,
        settings.database_url or "",
    )
    return found


def _run(inputs: Inputs, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGER, *args],
        env=cli_env(inputs.db_url),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


def _one_line_refusal(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _bad_files(tmp_path: Path, genuine: Path) -> Iterator[tuple[str, Path]]:
    """The named cases: every way a file can fail to be an input."""
    text = genuine.read_bytes()
    cases: dict[str, bytes | None] = {
        "missing": None,
        "empty": b"",
        "binary": bytes(range(256)) * 4,
        "not UTF-8": b'{"a": "\xff\xfe"}',
        "truncated": text[: len(text) // 2],
        "wrong types": json.dumps(
            {"leaf_index": "0", "tree_size": True, "audit_path": [1]}
        ).encode(),
        "a list": b"[1, 2, 3]",
        "deeply nested": b"[" * 100_000 + b"]" * 100_000,
        "huge number": b'{"tree_size": ' + b"9" * 5_000 + b"}",
        "NaN": b'{"tree_size": NaN}',
    }
    for name, content in cases.items():
        path = tmp_path / f"bad-{genuine.stem}-{name.replace(' ', '-')}"
        if content is not None:
            path.write_bytes(content)
        yield name, path
    yield "a directory", tmp_path


async def test_the_real_command_verifies_the_genuine_inputs_and_refuses_bad_ones(
    inputs: Inputs, tmp_path: Path
) -> None:
    assert _run(inputs, inputs.proof_args()).returncode == 0
    checked = _run(inputs, inputs.checkpoints_args())
    assert checked.returncode == 0, checked.stderr
    bad = dict(_bad_files(tmp_path, inputs.checkpoint))
    _one_line_refusal(_run(inputs, inputs.proof_args(record=tmp_path / "no-such-file")))
    _one_line_refusal(_run(inputs, inputs.proof_args(checkpoint=bad["binary"])))
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(inputs.checkpoints.read_bytes()[:-40])
    _one_line_refusal(_run(inputs, inputs.checkpoints_args(checkpoints=truncated)))


def test_every_named_bad_file_is_one_line_and_exit_1(
    cli_settings: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = cli_settings
    for field in FIELDS:
        for name, bad in _bad_files(tmp_path, getattr(inputs, field)):
            code, err = _main_exit(inputs.proof_args(**{field: bad}), capsys)
            assert code == 1, (field, name, err)
            assert len(err.strip().splitlines()) == 1, (field, name, err)
    for field in ("checkpoints", "public_key"):
        for name, bad in _bad_files(tmp_path, getattr(inputs, field)):
            code, err = _main_exit(inputs.checkpoints_args(**{field: bad}), capsys)
            assert code == 1, (field, name, err)
            assert len(err.strip().splitlines()) == 1, (field, name, err)


def test_a_usage_error_is_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [LEDGER, "audit", "verify-proof", "--record", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def _main_exit(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.fixture
def cli_settings(inputs: Inputs, monkeypatch: pytest.MonkeyPatch) -> Inputs:
    """`main` reads its settings from the environment, as the command does."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", inputs.db_url)
    monkeypatch.setenv("LEDGER_LOG_FORMAT", "json")
    monkeypatch.setenv("LEDGER_LOG_LEVEL", "info")
    return inputs


FIELDS = ("record", "proof", "checkpoint", "public_key")
SETTINGS = hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(field=st.sampled_from(FIELDS), content=st.binary(max_size=2_000))
def test_verify_proof_answers_1_for_any_bytes(
    cli_settings: Inputs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    content: bytes,
) -> None:
    path = tmp_path / f"fuzz-{field}"
    path.write_bytes(content)
    code, err = _main_exit(cli_settings.proof_args(**{field: path}), capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_verify_proof_answers_1_for_any_json(
    cli_settings: Inputs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: Any,
) -> None:
    path = tmp_path / f"fuzz-json-{field}"
    path.write_text(json.dumps(value))
    code, err = _main_exit(cli_settings.proof_args(**{field: path}), capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err


@SETTINGS
@given(content=st.binary(max_size=2_000) | json_values.map(lambda v: json.dumps(v).encode()))
def test_verify_checkpoints_answers_1_for_any_file(
    cli_settings: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "fuzz-checkpoints.jsonl"
    path.write_bytes(content)
    code, err = _main_exit(cli_settings.checkpoints_args(checkpoints=path), capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
