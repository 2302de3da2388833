"""Companion processes for fastconv-bench --processes N: while the measuring process times one
side of a layer (fastconv or the baseline), every companion runs that same side of that same
layer, with the same threads. So each side is timed on an oversubscribed machine (N processes
of T threads each on fewer than N * T cores) of its own kind: N programs of fastconv, or N of
torch, as when several jobs of one program share a machine.

The measuring process writes "<case index> <side>" on a companion's stdin before each call it
times and waits for the companion's "ready" line, which comes once the companion has finished
the call it was in and switched; the companion then calls that side until the next line, and
exits when stdin closes."""

import contextlib
import select
import subprocess
import sys


# Started with -c rather than -m: runpy warns when a module of an imported package runs as main.
_START = "import sys; from fastconv.bench.load import main; sys.exit(main(sys.argv[1:]))"
SIDES = ("fast", "base")


class Companions:
    """N - 1 companion processes started with the measuring process's own arguments."""

    def __init__(self, count: int, argv):
        self.procs = [subprocess.Popen([sys.executable, "-c", _START] + list(argv),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for _ in range(count)]
        self.index = None

    def follow(self, index: int):
        """The case every companion runs from the next switch on."""
        self.index = index

    def switch(self, side: str):
        """Puts every companion on `side` of the current case; returns once each runs it (or
        said why it cannot, in which case it idles)."""
        if side not in SIDES or self.index is None:
            raise ValueError(f"switch({side!r}) needs a side of {SIDES} after follow()")
        for p in self.procs:
            p.stdin.write(f"{self.index} {side}\n")
            p.stdin.flush()
        answers = [p.stdout.readline().strip() for p in self.procs]
        lost = [a for a in answers if not a.startswith("ready")]
        if lost:
            raise RuntimeError(f"a companion process stopped: {lost[0] or 'no answer'}")
        return answers

    def close(self):
        for p in self.procs:
            with contextlib.suppress(OSError, ValueError):
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(argv):
    from .cli import DTYPES, case_runners, run_parser, select_cases, settle_args

    parser = run_parser()
    args = settle_args(parser, parser.parse_args(argv))
    cases = select_cases(parser, args)
    dtype = DTYPES[args.dtype]
    runners, loaded, run = {}, None, None
    while True:
        if run is None or select.select([sys.stdin], [], [], 0)[0]:
            line = sys.stdin.readline()
            if not line:
                return 0
            index, side = line.split()
            try:
                if loaded != index:
                    runners, loaded = {}, None
                    fast, base = case_runners(cases[int(index)], args, dtype, forced_per_call=True)
                    runners, loaded = {"fast": fast, "base": base}, index
                run = runners[side]
                print("ready", flush=True)
            except Exception as e:  # the measuring process records the row's own error
                run = None
                print(f"ready (idle: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__})", flush=True)
            continue
        run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
