"""Drive `minerva run MODEL` (the chat) through a pseudo-terminal, as a person would: two turns
(the second reusing the cached conversation), /clear, /exit; then Ctrl-C stopping an answer
that ignores EOS without ending the program. Prints what it checked; exits non-zero on the first failure.

    python chat_pty.py MINERVA_BINARY MODEL
"""

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time

STATS = re.compile(rb"\[(\d+) tokens in [\d.]+ s, [\d.]+ tok/s; prompt (\d+) tokens, (\d+) cached\]")


class Session:
    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(argv[0], argv)
        self.buffer = b""
        # A wide terminal, so that no echoed line wraps.
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))

    def expect(self, pattern, timeout=120):
        """Read until `pattern` (bytes regex) matches; return the match and consume up to it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.buffer)
            if m:
                seen, self.buffer = self.buffer[: m.end()], self.buffer[m.end():]
                return m, seen
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; got {self.buffer[-2000:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the chat ended waiting for {pattern!r}; got {self.buffer[-2000:]!r}")
                self.buffer += chunk

    def send(self, text):
        os.write(self.fd, text.encode())

    def turn(self, text):
        self.send(text + "\r")
        m, seen = self.expect(STATS)
        self.expect(rb">>> ")
        completion, prompt, cached = (int(g) for g in m.groups())
        return seen, prompt, cached


def main():
    binary, model = sys.argv[1], sys.argv[2]
    s = Session([binary, "run", model, "-t", "0", "-n", "1000", "--system", "Answer in one short sentence."])
    s.expect(rb">>> ")
    seen, prompt1, cached1 = s.turn("What is the capital of France?")
    assert b"Paris" in seen, seen
    print(f"turn 1: prompt {prompt1} tokens, {cached1} cached")
    seen, prompt2, cached2 = s.turn("And what is the capital of Germany?")
    print(f"turn 2: prompt {prompt2} tokens, {cached2} cached")
    assert prompt2 > prompt1 and cached2 >= prompt1, (prompt1, prompt2, cached2)
    s.send("/clear\r")
    s.expect(rb"\(conversation cleared\)")
    s.expect(rb">>> ")
    seen, prompt3, cached3 = s.turn("What is the capital of France?")
    print(f"after /clear: prompt {prompt3} tokens, {cached3} cached")
    assert prompt3 == prompt1 and cached3 > 0, (prompt1, prompt3, cached3)
    s.send("/exit\r")
    wait_for_exit(s)
    print("/exit ended the chat")

    # Ctrl-C: an answer that cannot end by itself (EOS ignored), stopped once it streams.
    s = Session([binary, "run", model, "-t", "0", "-n", "100000", "--ignore-eos"])
    s.expect(rb">>> ")
    s.send("Tell a long story.\r")
    s.expect(rb"Tell a long story\..*\n[^\n]*\w", timeout=60)
    s.send("\x03")
    s.expect(rb"\[stopped\]", timeout=30)
    s.expect(rb">>> ")
    print("Ctrl-C stopped the answer; the chat goes on")
    s.send("/exit\r")
    wait_for_exit(s)


def wait_for_exit(s):
    """Wait until the chat's process ends, asserting that it ends with status 0."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid, status = os.waitpid(s.pid, os.WNOHANG)
        if pid:
            assert os.waitstatus_to_exitcode(status) == 0, status
            return
        try:
            os.read(s.fd, 65536)
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("the chat did not exit")


if __name__ == "__main__":
    main()
