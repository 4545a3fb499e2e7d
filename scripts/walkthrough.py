"""The README's first hour, played against the fake Split on loopback, printed as a transcript.

    .venv/bin/python scripts/walkthrough.py            # prints every command and its output

Each step is what a new administrator does or meets: the first plan and sync of the bundled
example, a user deactivated in Split by hand (seen by ``plan --refresh``, put right by
``sync --reconcile``), a saved plan that goes stale, a sync interrupted half-way (Ctrl-C), a
group name Split refuses, and a token pasted with a trailing space. The commands are the
real CLI in child processes; Split is the project's fake (tests/fakes/split.py), which
answers as Split does. ``tests/test_walkthrough.py`` runs it and checks each step's verdict,
so the transcript stays true. Sends nothing anywhere but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.split import FakeSplit  # noqa: E402

TOKEN = "walkthrough-token-0123456789abcdef"


class Walk:
    def __init__(self, folder: Path, split: FakeSplit, out=sys.stdout):
        self.folder = folder
        self.split = split
        self.out = out
        self.steps: list[tuple[str, list[str], int, str]] = []
        self.directory = folder / "directory.json"
        example = json.loads((ROOT / "examples" / "directory.json").read_text())
        users = example["users"][:4]                     # the example, cut to four people
        kept = {u["id"] for u in users}
        groups = [{**g, "members": [m for m in g["members"] if m in kept]}
                  for g in example["groups"]]
        self.directory.write_text(json.dumps(
            {"users": users, "groups": [g for g in groups if g["members"]]}, indent=2))
        self.token_file = folder / "token"
        self.token_file.write_text(TOKEN)
        self.token_file.chmod(0o600)
        self.config = folder / "config.toml"
        self.write_config(f'{{ file = "{self.token_file}" }}')

    def write_config(self, token: str) -> None:
        self.config.write_text(textwrap.dedent(f"""\
            [state]
            path = "state/agent.db"

            [source]
            type = "file"
            path = "directory.json"

            [target]
            url = "{self.split.base_url}"
            token = {token}
            rate_limit = 50.0
            concurrency = 1

            [sync]
            admin_group = "IT Admins"
            """))

    def say(self, text: str) -> None:
        print(f"\n## {text}\n", file=self.out)

    def run(self, step: str, *args: str) -> tuple[int, str]:
        shown = "scim-agent " + " ".join(args)
        result = subprocess.run([sys.executable, "-m", "agent", "--config", str(self.config),
                                 *args], cwd=self.folder, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=120)
        text = result.stdout
        self._show(shown, text, result.returncode)
        self.steps.append((step, list(args), result.returncode, text))
        return result.returncode, text

    def _show(self, shown: str, text: str, code: int) -> None:
        print(f"$ {shown}", file=self.out)
        print(textwrap.indent(text.rstrip(), "  ") if text.strip() else "  (no output)",
              file=self.out)
        print(f"  [exit {code}]", file=self.out)

    def edit_directory(self, change) -> None:
        data = json.loads(self.directory.read_text())
        change(data)
        self.directory.write_text(json.dumps(data, indent=2))

    def by_hand_in_split(self, user_name: str, **attributes) -> None:
        """What an admin does in Split's UI, through Split's own API."""
        with httpx.Client(base_url=self.split.base_url + "/", trust_env=False, timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as split:
            found = split.get("Users", params={"filter": f'userName eq "{user_name}"'}).json()
            user_id = found["Resources"][0]["id"]
            operations = [{"op": "replace", "path": key, "value": value}
                          for key, value in attributes.items()]
            split.patch(f"Users/{user_id}", json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": operations}).raise_for_status()

    def interrupted_sync(self) -> tuple[int, str]:
        """Ctrl-C on a manual sync while Split is slow: SIGINT after a few writes landed."""
        self.split.answer_latency = 0.2
        before = len(self.split.writes())
        process = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(self.config),
                                    "sync", "--yes"], cwd=self.folder, env=_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while len(self.split.writes()) < before + 3 and time.monotonic() < deadline \
                and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        text, _ = process.communicate(timeout=60)
        self.split.answer_latency = 0.0
        self._show("sync --yes      # Ctrl-C after a few writes", text, process.returncode)
        self.steps.append(("interrupted", ["sync"], process.returncode, text))
        return process.returncode, text


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_AGENT")}
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "100"
    env["TZ"] = "UTC"
    env["PYTHONUNBUFFERED"] = "1"            # stdout and the log interleave as on a terminal
    return env


def walk(folder: Path, split: FakeSplit, out=sys.stdout) -> Walk:
    w = Walk(folder, split, out)
    w.say("1. The first plan, then the first sync")
    w.run("first plan", "plan")
    w.run("first sync", "sync", "--yes")
    w.run("status after the first sync", "status")

    w.say("2. Someone deactivates Bob in Split by hand and changes his title")
    w.by_hand_in_split("bob.baker@example.org", active=False, title="Contractor")
    w.run("plan without looking at Split", "plan")
    w.run("plan --refresh shows the drift", "plan", "--refresh")
    w.run("reconcile puts it right", "sync", "--reconcile", "--yes")
    w.run("history of bob", "history", "bob.baker@example.org")

    w.say("3. A saved plan goes stale: the directory changes between review and apply")
    w.edit_directory(lambda d: d["users"][0].update(title="Principal Engineer"))
    w.run("plan --out", "plan", "--out", "reviewed.plan")
    w.edit_directory(lambda d: d["users"][1].update(title="Staff Engineer"))
    w.run("the stale plan is refused", "sync", "--plan", "reviewed.plan", "--yes")
    w.run("a fresh plan, applied as reviewed", "plan", "--out", "reviewed.plan")
    w.run("applied as reviewed", "sync", "--plan", "reviewed.plan", "--yes")

    w.say("4. A sync interrupted half-way (Ctrl-C)")
    w.edit_directory(lambda d: [u.update(title=u.get("title", "") + " (EMEA)")
                                for u in d["users"]])
    w.interrupted_sync()
    w.run("status shows the interrupted run", "status")
    w.run("the next sync finishes the rest", "sync", "--yes")

    w.say("5. A group name Split refuses (25 characters or more)")
    w.edit_directory(lambda d: d["groups"].append(
        {"id": "g-long", "displayName": "Customer Success Engineering EMEA",
         "members": [d["users"][0]["id"]]}))
    w.run("refused in the plan", "plan", "--detailed-exitcode")
    w.run("refused by the sync: its own exit status", "sync", "--yes")
    w.run("status lists it under needs attention", "status")

    w.say("6. A token pasted with a trailing space")
    w.write_config(f'"{TOKEN} "')
    w.run("a mistyped token", "sync", "--yes")
    return w


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="scim-agent-walk-") as folder, \
            FakeSplit(token=TOKEN) as split:
        walk(Path(folder), split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
