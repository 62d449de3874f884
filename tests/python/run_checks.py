"""Run one suite of tests/python/checks against a running `minerva serve`: the Rust tests start
the server on a loopback port and call this with the suite's name and arguments. It prints one
line per check and a closing `N passed, M failed` line, and fails unless all passed.
"""

import argparse
import importlib
import sys
import traceback

from checks import common


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--api-key")
    p.add_argument("--suite", required=True, help="a module of checks/ (`pull-off` is in pull.py)")
    p.add_argument("--victim", help="runners: a model whose file the checks truncate")
    p.add_argument("--victim-path", help="runners: that model's file")
    p.add_argument("--twin", help="runners: the MLX twin of --model; pull: an MLX repo on the hub")
    p.add_argument("--local", help="pull: a configured model on a local path")
    p.add_argument("--cache", help="pull: the server's Hugging Face cache")
    p.add_argument("--server-pid", type=int, help="runners: the server's process id")
    p.add_argument("--split", help="rpc, ring: --model split over workers or ranks")
    p.add_argument("--worker-ports", type=int, nargs="+", help="rpc, ring: the workers' ports, in order")
    p.add_argument("--worker-pid", type=int, help="rpc, ring: the last worker's process id")
    p.add_argument("--minerva", help="rpc, ring: the minerva binary (restarts the worker)")
    p.add_argument("--hostfile", help="ring: the MLX ring's hostfile")
    p.add_argument("--split-path", help="ring: the split model's directory")
    args = p.parse_args()
    vars(common.args).update(vars(args))
    importlib.import_module(f"checks.{args.suite.split('-')[0]}")
    passed = failed = 0
    for suite, fn in common.CHECKS:
        if suite != args.suite:
            continue
        try:
            fn()
            passed += 1
            print(f"ok     {fn.__name__}", flush=True)
        except Exception:
            failed += 1
            print(f"FAILED {fn.__name__}\n{traceback.format_exc()}", flush=True)
    if not passed + failed:
        print(f"no checks in suite {args.suite}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
