"""Child processes of a benchmark, spoken to in JSON lines.

A benchmark runs what it measures in child processes of its own (the server
alone in one, so that its CPU time and RSS are its own): the script runs
itself again as `script --child ROLE ARG...`, and the parent sends one JSON
object per line on the child's stdin and reads one per line back from its
stdout (a reply with an "error" key raises in the parent). The children's
stderr stays the parent's, so their tracebacks show.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND_TIMEOUT = 10.0  # seconds for a child's reply, beyond any window of its own


# --- in the child ----------------------------------------------------------------------

def emit(reply: dict) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


async def stdin_lines():
    """The parent's commands, one JSON object per line, until it closes stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield json.loads(line)


def run_if_child(roles: dict) -> bool:
    """If this process is a child (`--child ROLE ARG...`), run `roles[ROLE](*ARGS)`,
    a coroutine function, to the end and return True; else return False."""
    if len(sys.argv) < 3 or sys.argv[1] != "--child":
        return False
    role, *args = sys.argv[2:]
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(roles[role](*args))
    return True


# --- in the parent ---------------------------------------------------------------------

class Child:
    """A child process of a benchmark script, spoken to in JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process, name: str, quit_timeout: float):
        self.process = process
        self.name = name
        self.quit_timeout = quit_timeout

    @classmethod
    async def start(cls, script: str, role: str, *args: str, quit_timeout: float) -> Child:
        """`script --child role args...`; `quit_timeout`: how long `stop()` waits
        for it to exit after the quit command before killing it."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(script), "--child", role, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return cls(process, role, quit_timeout)

    async def reply(self, timeout: float) -> dict:
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"child {self.name} exited "
                               f"(status {await self.process.wait()}); see its stderr above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"child {self.name}: {reply['error']}")
        return reply

    async def ask(self, timeout: float = COMMAND_TIMEOUT, **command) -> dict:
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        return await self.reply(timeout)

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                self.process.stdin.write(b'{"op": "quit"}\n')
                await self.process.stdin.drain()
            try:
                await asyncio.wait_for(self.process.wait(), self.quit_timeout)
            except asyncio.TimeoutError:
                self.process.kill()  # this benchmark's own child, by its handle
                await self.process.wait()
