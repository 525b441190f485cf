"""
Drives LLMSecretsManager the way a LiteLLM proxy does, and prints what happened as one JSON object.

    python3 litellm_driver.py CONFIG_DIR SCENARIO

The class is loaded as LiteLLM's custom secret manager loader does: `custom_secret_manager` of
the config's `key_management_settings` is `<file>.<Class>`, the file is `<config dir>/<file>.py`,
loaded by its path, checked to subclass CustomSecretManager and constructed with no arguments.
Then:
- `session`: a provider key read (sync, as get_secret does, and async), a name the store does not
  hold, a virtual key written under the stored-keys prefix, read back, deleted, read again; and
  the health check.
- `read`: one read of OPENAI_API_KEY, sync and async, and the health check (for the wrong-key and
  server-down cases).
- `two_keys`: a second instance made with `SECOND_KEY`; both read.
- `rotate`: a virtual key written, rotated under the same name, then under a new one.
- `delete_loop`: LiteLLM's revocation loop over two names, the first one refused; the warnings
  logged on LiteLLM's logger.
- `functions_key`: a read against a recording server, to see the headers sent.
- `retry`: a write, then a sync read, against a server that answers each 503 with Retry-After once.
- `older_server`: a rotation to a new name against a server that refuses `replaces` in a PUT's body
  (an older one: its body schema refuses unknown keys), recording each call.
- `rolling_upgrade`: the same rotation against servers half upgraded: the first PUT meets an older
  one (400 for `replaces`), the next ones a newer one, on which the two names are one secret (409
  name_conflict without `replaces`, the rename with it); recording each call.
- `hooks`: LiteLLM's key hooks (KeyManagementEventHooks) around the class, the steps from `STEPS`
  (JSON): `["gen", alias, key]` a key generated, `["rot", old, new, key]` regenerated, `["del", alias]`
  deleted, each name under the prefix; a generate or regenerate that raises is one WARNING on the
  `LiteLLM Proxy` logger, as the hooks log it. The records of both LiteLLM loggers are in `logs`.
Each step's result or error (its type, status, code and message) goes into the output.
"""

import asyncio
import importlib.util
import json
import logging
import os
import sys
import time

import yaml

config_dir, scenario = sys.argv[1], sys.argv[2]
with open(os.path.join(config_dir, "config.yaml")) as f:
    config = yaml.safe_load(f)
settings = config["general_settings"]["key_management_settings"]
file_name, class_name = settings["custom_secret_manager"].split(".")
spec = importlib.util.spec_from_file_location(file_name, os.path.join(config_dir, f"{file_name}.py"))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
cls = getattr(module, class_name)

from litellm.integrations.custom_secret_manager import CustomSecretManager  # noqa: E402

out = {"subclass": issubclass(cls, CustomSecretManager)}


def step(name, fn):
    started = time.monotonic()
    try:
        out[name] = {"ok": fn()}
    except Exception as err:  # every failure is recorded, with what it says
        out[name] = {
            "error": type(err).__name__,
            "status": getattr(err, "status", None),
            "code": getattr(err, "code", None),
            "message": str(err),
        }
    out[name]["seconds"] = round(time.monotonic() - started, 3)


def run(coro):
    return lambda: asyncio.run(coro())


def local_server(handler):
    """A real HTTP server on loopback answering with `handler`, and an instance of the class pointed at it."""
    import http.server
    import threading

    class Quiet(handler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["LLM_SECRETS_URL"] = f"http://127.0.0.1:{server.server_address[1]}"
    return server, cls()


try:
    manager = cls()
except Exception as err:
    print(json.dumps({"construct": {"error": type(err).__name__, "message": str(err)}}))
    sys.exit(0)

prefix = settings.get("prefix_for_stored_virtual_keys", "litellm/")
virtual = f"{prefix}team-a/sk-virtual+1"

if scenario == "session":
    step("sync_read", lambda: manager.sync_read_secret("OPENAI_API_KEY"))
    step("sync_read_missing", lambda: manager.sync_read_secret("NOT_THERE"))

    async def session():
        results = {}
        results["async_read"] = await manager.async_read_secret("OPENAI_API_KEY")
        results["write"] = await manager.async_write_secret(
            secret_name=virtual,
            secret_value=os.environ["VIRTUAL_KEY_VALUE"],
            description="LiteLLM virtual key",
            tags={"team": "a"},
        )
        results["read_back"] = await manager.async_read_secret(virtual)
        # Two reads at once share the pooled client.
        both = await asyncio.gather(manager.async_read_secret(virtual), manager.async_read_secret("OPENAI_API_KEY"))
        results["concurrent"] = list(both)
        results["delete"] = await manager.async_delete_secret(secret_name=virtual, recovery_window_in_days=7)
        results["read_after_delete"] = await manager.async_read_secret(virtual)
        results["healthy"] = await manager.async_health_check()
        return results

    step("async", run(session))
elif scenario == "two_keys":
    # A second instance with another key (from the environment at its construction) in the same
    # process: each sends its own key, though their clients are pooled.
    os.environ["LLM_SECRETS_API_KEY"] = os.environ["SECOND_KEY"]
    second = cls()
    step("first", lambda: manager.sync_read_secret("OPENAI_API_KEY"))
    step("second", lambda: second.sync_read_secret("OPENAI_API_KEY"))
elif scenario == "traversal":
    # A key alias is the caller's: dot segments in it must never reach another name (an HTTP client
    # removes them from the URL before sending, so the server would see the name they point at).
    escape = f"{prefix}x/../../OPENAI_API_KEY"

    async def write():
        return await manager.async_write_secret(secret_name=escape, secret_value=os.environ["VIRTUAL_KEY_VALUE"])

    async def delete():
        return await manager.async_delete_secret(secret_name=escape, recovery_window_in_days=7)

    step("write", run(write))
    step("delete", run(delete))
    step("read_dot", lambda: manager.sync_read_secret(f"{prefix}./OPENAI_API_KEY"))
    step("read_empty_segment", lambda: manager.sync_read_secret(f"{prefix}a//b"))
    step("read", lambda: manager.sync_read_secret("OPENAI_API_KEY"))
elif scenario == "rotate":
    # Key regeneration as LiteLLM's hook calls it: the alias kept (the usual case), then renamed.
    renamed = f"{prefix}team-a/renamed"

    async def rotate():
        results = {}
        results["write"] = await manager.async_write_secret(
            secret_name=virtual, secret_value=os.environ["VIRTUAL_KEY_VALUE"], tags=[{"Key": "Env", "Value": "prod"}]
        )
        results["same_name"] = await manager.async_rotate_secret(virtual, virtual, os.environ["ROTATED_VALUE"])
        results["renamed"] = await manager.async_rotate_secret(virtual, renamed, os.environ["RENAMED_VALUE"])
        return results

    step("rotate", run(rotate))
    # The body a write sends for LiteLLM's list form of tags (AWS's Key/Value pairs) and bare keys.
    step(
        "tags_body",
        lambda: module._write_body("v", None, [{"Key": "Env", "Value": "prod"}, {"Key": "Empty", "Value": None}, "bare"]),
    )
elif scenario == "delete_loop":
    # LiteLLM's revocation: every name of a key deleted in one loop with no try. A name the server
    # refuses must not end the loop (the next one stays stored otherwise).
    kept = f"{prefix}team-b"
    warnings = []

    class Recorder(logging.Handler):
        def emit(self, record):
            warnings.append({"level": record.levelname, "message": record.getMessage()})

    logging.getLogger("LiteLLM").addHandler(Recorder())

    async def revoke():
        await manager.async_write_secret(secret_name=kept, secret_value=os.environ["VIRTUAL_KEY_VALUE"])
        results = []
        for name in ["my key/../x", kept]:
            results.append(await manager.async_delete_secret(secret_name=name))
        return results

    step("revoke", run(revoke))
    step("read_after", lambda: manager.sync_read_secret(kept))
    out["warnings"] = warnings
elif scenario == "functions_key":
    # What an Azure deployment needs: the function key in x-functions-key, beside the master key.
    import http.server

    seen = {}

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.update({k.lower(): v for k, v in self.headers.items()})
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()

    recorder, azure = local_server(Recorder)
    step("read", lambda: azure.sync_read_secret("OPENAI_API_KEY"))
    out["functions_key_sent"] = seen.get("x-functions-key") == os.environ.get("LLM_SECRETS_FUNCTIONS_KEY")
    out["master_key_sent"] = seen.get("x-litellm-api-key") == os.environ.get("LLM_SECRETS_API_KEY")
    recorder.shutdown()
elif scenario == "retry":
    # A store outage for a moment: the server answers 503 with Retry-After once, then the write lands.
    import http.server

    calls = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 (http.server's name)
            self.answer(b'{"name":"k","created":true}', 201)

        def do_GET(self):  # noqa: N802 (http.server's name)
            self.answer(b'{"name":"k","value":"read-after-retry","stale":false}', 200)

        def answer(self, success, status):
            self.rfile.read(int(self.headers.get("content-length", "0")))
            calls.append(self.command)
            first = calls.count(self.command) == 1
            body = b'{"error":{"code":"backend_unavailable","message":"down"}}' if first else success
            self.send_response(503 if first else status)
            if first:
                self.send_header("retry-after", "1")
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    flaky, retrying = local_server(Flaky)

    async def write():
        return await retrying.async_write_secret(secret_name=virtual, secret_value=os.environ["VIRTUAL_KEY_VALUE"])

    step("write", run(write))
    step("sync_read", lambda: retrying.sync_read_secret("OPENAI_API_KEY"))
    out["calls"] = calls
    flaky.shutdown()
elif scenario in ("older_server", "rolling_upgrade"):
    import http.server

    calls = []
    UNKNOWN_KEY = b'{"error":{"code":"invalid_request","message":"Unrecognized key: \\"replaces\\""}}'
    CONFLICT = b'{"error":{"code":"name_conflict","message":"the name maps to the secret of another name"}}'

    def older(body):
        # Its body schema refuses unknown keys.
        return (400, UNKNOWN_KEY) if "replaces" in body else (201, b'{"name":"litellm/b","created":true}')

    def rolling(body):
        # The first PUT meets an older server; the next ones a newer one, on which the two names are one secret.
        if len(calls) == 1:
            return 400, UNKNOWN_KEY
        return (200, b'{"name":"litellm/b","created":false}') if "replaces" in body else (409, CONFLICT)

    put_answer, delete_answer = (older, (204, b"")) if scenario == "older_server" else (rolling, (409, CONFLICT))

    class Recording(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            calls.append(["PUT", sorted(body)])
            self.answer(*put_answer(body))

        def do_DELETE(self):  # noqa: N802 (http.server's name)
            calls.append(["DELETE", self.path])
            self.answer(*delete_answer)

        def answer(self, status, body):
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    recording, rotating = local_server(Recording)

    async def rotate():
        return await rotating.async_rotate_secret(f"{prefix}a", f"{prefix}b", os.environ["VIRTUAL_KEY_VALUE"])

    step("rotate", run(rotate))
    out["calls"] = calls
    recording.shutdown()
elif scenario == "hooks":
    records = []

    class Records(logging.Handler):
        def emit(self, record):
            records.append({"logger": record.name, "level": record.levelname, "message": record.getMessage()})

    for logger_name in ("LiteLLM", "LiteLLM Proxy"):
        logging.getLogger(logger_name).addHandler(Records())
        logging.getLogger(logger_name).setLevel(logging.INFO)
    proxy_logger = logging.getLogger("LiteLLM Proxy")

    async def hooks():
        results = []
        for kind, *args in json.loads(os.environ["STEPS"]):
            try:
                if kind == "gen":  # async_key_generated_hook: prefix + (key_alias or virtual-key-<token_id>)
                    await manager.async_write_secret(
                        secret_name=prefix + args[0],
                        secret_value=args[1],
                        description=None,
                        tags=None,
                        optional_params=None,
                    )
                    results.append({"ok": "stored"})
                elif kind == "rot":  # async_key_rotated_hook
                    await manager.async_rotate_secret(
                        current_secret_name=prefix + args[0],
                        new_secret_name=prefix + args[1],
                        new_secret_value=args[2],
                        optional_params=None,
                    )
                    results.append({"ok": "rotated"})
                else:  # async_key_deleted_hook: its answer is ignored, and nothing catches a raise
                    results.append({"ok": await manager.async_delete_secret(secret_name=prefix + args[0])})
            except Exception as err:
                if kind != "del":
                    action = "store" if kind == "gen" else "rotate"
                    proxy_logger.warning("Failed to %s virtual key in secret manager: %s", action, err)
                results.append(
                    {
                        "error": type(err).__name__,
                        "status": getattr(err, "status", None),
                        "code": getattr(err, "code", None),
                        "message": str(err),
                    }
                )
        return results

    step("hooks", run(hooks))
    out["logs"] = records
elif scenario == "read":
    step("sync_read", lambda: manager.sync_read_secret("OPENAI_API_KEY"))

    async def one():
        return await manager.async_read_secret("OPENAI_API_KEY")

    async def health():
        return await manager.async_health_check()

    step("async_read", run(one))
    step("healthy", run(health))
print(json.dumps(out))
