"""``attributor serve`` as a process: refusals before listening, a real server, and a clean SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from attributor.cli import main


def run(capsys, *args):
    code = main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    """The one error line of a failed command (info lines may precede it; no traceback)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def test_exposed_host_without_keys_is_refused(corpus_dir, tmp_path, capsys):
    code, _, err = run(capsys, "serve", "--index", corpus_dir, "--host", "0.0.0.0", "--keys", tmp_path / "none.json")
    assert code == 2 and err.count("\n") == 1
    assert "refusing to serve on 0.0.0.0 without API keys" in err and "serve keys add" in err


def test_missing_index_and_busy_port_are_one_line_errors(corpus_dir, tmp_path, capsys):
    code, _, err = run(capsys, "serve")
    assert code == 2 and "attributor serve --index DIR" in err
    code, _, err = run(capsys, "serve", "--index", tmp_path / "nothing", "--port", 0)
    assert code == 2 and _error_line(err).endswith("(make one with `attributor gif fingerprint` or `attributor index build`)")
    assert "neither a fingerprinted corpus nor an index" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        code, _, err = run(capsys, "serve", "--index", corpus_dir, "--port", busy.getsockname()[1])
    assert code == 2 and "cannot listen on 127.0.0.1" in _error_line(err)
    code, _, err = run(capsys, "serve", "--index", corpus_dir, "--max-top-k", 0)
    assert code == 2 and "max_top_k" in err


def test_server_process_answers_and_stops_cleanly_on_sigterm(corpus_dir, tmp_path):
    from attributor.service import KeyStore

    keys = KeyStore(tmp_path / "keys.json")
    token = keys.add("reader", "read")
    env = dict(os.environ, ATTRIBUTOR_SERVE_KEYS="")
    process = subprocess.Popen([sys.executable, "-m", "attributor.cli", "serve", "--index", str(corpus_dir), "--port", "0",
                                "--keys", str(keys.path)], stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        url = _wait_for_url(process, lines)
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{url}/v1/query", json={"text": "weaver"}).status_code == 401
        answer = httpx.post(f"{url}/v1/query", json={"text": "Who is a weaver?", "top_k": 3}, headers=headers)
        assert answer.status_code == 200 and len(answer.json()["results"][0]["hits"]) == 3

        # a slow request in flight when SIGTERM arrives still gets its answer
        texts = [f"{i} " + " ".join(["weaver tanner potter"] * 40) for i in range(64)]
        in_flight: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: in_flight.append(
            httpx.post(f"{url}/v1/query", json={"texts": texts, "top_k": 5}, headers=headers, timeout=60)))
        slow.start()
        time.sleep(0.3)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        slow.join(20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    log = "".join(lines)
    assert code == 0, log
    assert time.monotonic() - started < 10
    assert in_flight and in_flight[0].status_code == 200 and len(in_flight[0].json()["results"]) == 64
    assert "Traceback" not in log and "Shutting down" in log and "stopped" in log


def _wait_for_url(process: subprocess.Popen, lines: list[str]) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", "".join(lines))
        if found:
            return found.group(1)
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}: {''.join(lines)}")
        time.sleep(0.05)
    pytest.fail(f"the server printed no address: {''.join(lines)}")
