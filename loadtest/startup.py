#!/usr/bin/env python3
"""Start-up of `terrafirma run` against `sh hello.sh`, interleaved.

    python3 loadtest/startup.py [--runs N] [--wasm FILE] BIN [BIN ...]

Every round runs `sh hello.sh` and then `BIN run FILE` for each BIN, once
each, so that the machine's changes of speed (on this shared VM, 20 % within
a minute) fall on every command alike; hyperfine runs one command's runs
together. Each BIN is first copied to a fresh file: how the page cache holds
a binary's pages depends on the file's history, and the same binary ran up to
30 % slower from an older copy than from a fresh one. The artifact cache is
a fresh directory, warmed by one run per BIN. Prints the median wall time of
each command and its ratio to sh's.

FILE defaults to the C WASI hello world that `scripts/build-examples.sh`
builds (target/startup-bench/examples/c-hello-wasi.wasm, as the startup
bench does).
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--wasm", default=os.path.join(ROOT, "target/startup-bench/examples/c-hello-wasi.wasm"))
    parser.add_argument("bins", nargs="+")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tf-startup-")
    try:
        script = os.path.join(work, "hello.sh")
        with open(script, "w") as f:
            f.write("echo 'Hello, world!'\n")
        env = dict(os.environ, XDG_CACHE_HOME=os.path.join(work, "cache"))
        commands = [["/bin/sh", script]]
        for i, binary in enumerate(args.bins):
            copy = os.path.join(work, f"{i}-{os.path.basename(binary)}")
            shutil.copy(binary, copy)
            commands.append([copy, "run", args.wasm])
        out = os.open(os.path.join(work, "out"), os.O_WRONLY | os.O_CREAT)
        times = [[] for _ in commands]
        for round in range(args.runs + 20):
            for i, command in enumerate(commands):
                os.ftruncate(out, 0)
                os.lseek(out, 0, os.SEEK_SET)
                start = time.perf_counter_ns()
                pid = os.posix_spawn(command[0], command, env, file_actions=[(os.POSIX_SPAWN_DUP2, out, 1)])
                _, status = os.waitpid(pid, 0)
                elapsed = time.perf_counter_ns() - start
                if status != 0:
                    raise SystemExit(f"{' '.join(command)}: exit status {status}")
                with open(os.path.join(work, "out")) as f:
                    if f.read() != "Hello, world!\n":
                        raise SystemExit(f"{' '.join(command)}: not the hello on stdout")
                if round >= 20:  # the first rounds warm the cache and the page cache
                    times[i].append(elapsed / 1e6)
        sh = statistics.median(times[0])
        print(f"sh hello.sh: {sh:.3f} ms")
        for binary, samples in zip(args.bins, times[1:]):
            median = statistics.median(samples)
            print(f"{binary} run: {median:.3f} ms ({median / sh:.2f}x sh)")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
