"""Drive headless Chromium over the DevTools protocol (stdlib only): open a report, run script, screenshot.

    python scripts/report_browser.py results/report.html report.png      # every section opened

Uses `--remote-debugging-pipe` (JSON messages separated by NUL bytes on file descriptors 3 and 4), so
it needs no websocket client and no port. Flags keep Chromium off the network: the report must be
readable offline, and this machine has none.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe",
         "--host-resolver-rules=MAP * ~NOTFOUND"]   # no host name resolves: a page needing a CDN fails here too


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def _high_fd(fd: int) -> int:
    """The same pipe end moved to a number >= 10, so that the shell's `3<&N 4>&M` cannot clobber it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium with one page; `evaluate` runs JavaScript in it and returns the value."""

    def __init__(self, exe: str, width: int = 1280, height: int = 900, timeout: float = 60):
        self.timeout, self.width, self._id, self._buf = timeout, width, 0, b""
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        cmd_r, self._cmd_w = map(_high_fd, os.pipe())   # we write commands, Chromium reads them on fd 3
        self._res_r, res_w = map(_high_fd, os.pipe())   # Chromium writes replies on fd 4, we read them
        args = " ".join(f"'{a}'" for a in [exe, *FLAGS, f"--user-data-dir={self._profile}",
                                           f"--window-size={width},{height}", "about:blank"])
        # bash, not sh: dash reads `4>&12` as `4>&1` followed by a stray "2"
        self.proc = subprocess.Popen(["bash", "-c", f"exec {args} 3<&{cmd_r} 4>&{res_w}"],
                                     pass_fds=(cmd_r, res_w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        except BaseException:
            self.close()
            raise

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:   # everything else is an event we do not need
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._res_r], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} within {self.timeout} s")
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()}) during {method}")
            self._buf += chunk

    def page(self, method: str, **params) -> dict:
        return self.send(method, session=self.session, **params)

    def evaluate(self, expression: str):
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, path: Path) -> None:
        """Navigate to a local file and wait until it and all its images have loaded."""
        self.page("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.monotonic() + self.timeout
        while not self.evaluate("document.readyState === 'complete' && "
                                "Array.from(document.images).every(i => i.complete)"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not finish loading within {self.timeout} s")
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the first element matching selector."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, out: Path, max_height: int = 16000) -> None:
        """The whole page (up to max_height pixels) as a PNG."""
        height = min(int(self.evaluate("document.documentElement.scrollHeight")), max_height)
        self.page("Emulation.setDeviceMetricsOverride", width=self.width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.evaluate("window.scrollTo(0, 0)")
        data = self.page("Page.captureScreenshot", format="png")["data"]
        Path(out).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._cmd_w)
        os.close(self._res_r)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(report: str, out: str) -> None:
    exe = find_chromium()
    if exe is None:
        sys.exit("error: no chromium on PATH; install it (Debian: apt-get install -y chromium)")
    with Browser(exe) as b:
        b.open(Path(report))
        b.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        b.screenshot(Path(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
