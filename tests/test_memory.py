"""The allocator settings of btu_twisted.memory, in a fresh interpreter (a setting made in trial's
process would outlive the test)."""

import subprocess
import sys
import textwrap

from twisted.trial import unittest

# Threads allocate after one_arena(); glibc's malloc_info then lists the arenas ("<heap nr=...>").
PROGRAM = textwrap.dedent("""
    import ctypes, os, sys, tempfile, threading
    from btu_twisted import memory
    took = memory.one_arena() if sys.argv[1] == "one" else None
    def work():
        blocks = [bytearray(4096) for _ in range(2000)]
        del blocks
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL("libc.so.6")
    libc.fdopen.restype = ctypes.c_void_p
    with tempfile.TemporaryFile() as f:
        stream = ctypes.c_void_p(libc.fdopen(os.dup(f.fileno()), b"w"))
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        f.seek(0)
        info = f.read().decode()
    print(took, info.count("<heap nr="), memory.release())
""")


def run(mode: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True,
                          check=True, timeout=60).stdout.split()


class ArenaTests(unittest.TestCase):
    def test_threads_share_one_arena(self):
        """After one_arena(), threads that allocate add no arena; without it each may add one."""
        took, heaps, _released = run("one")
        self.assertEqual((took, heaps), ("True", "1"))
        _took, default_heaps, _released = run("default")
        self.assertGreater(int(default_heaps), 1)

    def test_release_answers(self):
        """release() runs malloc_trim and says whether memory went back (a bool, never an error)."""
        self.assertIn(run("one")[2], ("True", "False"))
