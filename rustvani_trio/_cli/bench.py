"""``python -m rustvani_trio bench``: benchmark an OpenAI-compatible endpoint (docs/bench.md)."""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import pathlib
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

N = TypeVar("N", int, float)

HELP = "benchmark an OpenAI-compatible endpoint through a pipeline and as a raw stream"


def _numbers(
    convert: Callable[[str], N], valid: Callable[[N], bool], kind: str, example: str, bound: str
) -> Callable[[str], tuple[N, ...]]:
    """A parser of comma-separated numbers (``"1,8,32"``) for ``type=``: each item made with
    ``convert`` (an error says ``expected <kind> like <example>``) and checked with ``valid``
    (``expected <bound>``)."""

    def parse(text: str) -> tuple[N, ...]:
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"an empty item in {text!r}: expected e.g. {example}")
        try:
            values = tuple(convert(part) for part in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {kind} like {example}, got {text!r}"
            ) from None
        if not all(valid(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected {bound}, got {text!r}")
        return values

    return parse


#: ``--concurrency``: whole numbers >= 1
_ints = _numbers(int, lambda v: v >= 1, "whole numbers", "1,8,32", "numbers >= 1 like 1,8,32")
#: ``--rate``: finite numbers > 0
_floats = _numbers(
    float, lambda v: 0 < v < math.inf, "numbers", "2 or 1,5,10", "rates > 0 (and finite)"
)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, like '{\"ignore_eos\": true}'")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Measure TTFT, inter-token latency, time per output token, end-to-end latency and "
        "throughput of an OpenAI-compatible streaming endpoint, each request run through a "
        "rustvani-trio pipeline and, interleaved, as a raw HTTP stream. Writes bench.json, "
        "report.html and bench.png into --out."
    )
    add = parser.add_argument
    add(
        "--base-url",
        required=True,
        metavar="URL",
        help="the API root, e.g. http://127.0.0.1:8000/v1; 'scripted' starts the scripted "
        "server in-process (no network)",
    )
    add(
        "--model", metavar="M", help="model name (default with --base-url scripted: scripted-model)"
    )
    add(
        "--api-key-env",
        metavar="VAR",
        help="read the API key from this environment variable (the key is never written out)",
    )
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        type=_ints,
        metavar="1,8,32",
        help="fixed-concurrency levels, run in turn (default 1)",
    )
    load.add_argument(
        "--rate",
        type=_floats,
        metavar="R",
        help="Poisson arrivals at R requests/s (a list runs each in turn)",
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--requests",
        type=int,
        metavar="N",
        help="measured requests per level, both paths together (default 40)",
    )
    amount.add_argument(
        "--duration", type=float, metavar="S", help="issue requests for S seconds per level instead"
    )
    add("--prompt-tokens", type=int, default=256, metavar="P", help="prompt size (default 256)")
    add("--max-tokens", type=int, default=128, metavar="T", help="output limit (default 128)")
    add(
        "--tools",
        action="store_true",
        help="each request calls a tool; reports the tool round trip",
    )
    add(
        "--interrupt-after-ms",
        type=float,
        metavar="X",
        help="interrupt each request X ms after it started; reports the time until its "
        "connection closed",
    )
    add("--out", metavar="DIR", help="output directory (default bench-results/<UTC time>)")
    add(
        "--warmup",
        type=int,
        metavar="N",
        help="warm-up requests per level (default: the concurrency, at least 2)",
    )
    add("--seed", type=int, default=0, help="seeds prompts, arrivals and scripted faults")
    add(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="longest wait for the first token and for each next chunk (default 60)",
    )
    add(
        "--extra-body",
        type=_json_object,
        default={},
        metavar="JSON",
        help="merged into every request body, e.g. '{\"ignore_eos\": true}'",
    )
    add(
        "--no-overhead",
        action="store_true",
        help="skip measuring the load generator's overhead against an instant server",
    )
    add(
        "--scripted-first-token-ms",
        type=float,
        metavar="MS",
        help="with --base-url scripted: delay before the first token (default 200)",
    )
    add(
        "--scripted-token-interval-ms",
        type=float,
        metavar="MS",
        help="with --base-url scripted: delay between tokens (default 20)",
    )
    add(
        "--scripted-error-rate",
        type=float,
        metavar="SHARE",
        help="with --base-url scripted: share of requests that fail (0..1)",
    )


def _or(value: int | None, default: int) -> int:
    """``value`` unless it was not given (``--requests 0`` is refused, not replaced)."""
    return default if value is None else value


def _command(args: argparse.Namespace) -> list[str]:
    """The command line that reproduces the run (it never holds the key: only its variable)."""
    out = ["python", "-m", "rustvani_trio", "bench"]
    for key, value in sorted(vars(args).items()):
        if key == "command" or value is None or value is False or value == {}:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif isinstance(value, tuple):
            out += [flag, ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]
        elif isinstance(value, dict):
            out += [flag, json.dumps(value)]
        else:
            out += [flag, str(value)]
    return out


async def _until_ctrl_c(
    run_bench: Callable[..., Awaitable[dict[str, Any]]],
    config: Any,
    progress: Any,
    command: list[str],
) -> dict[str, Any] | None:
    """Run the bench; the first Ctrl-C stops it and returns what it measured (a partial
    report), a second one aborts it (``None``)."""
    import trio

    stop = trio.Event()
    report: dict[str, Any] | None = None
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in signals:
                    if stop.is_set():
                        nursery.cancel_scope.cancel()  # the second Ctrl-C: abort
                        return
                    print(
                        "\nbench: stopping; writing what was measured (Ctrl-C again to abort)",
                        file=sys.stderr,
                    )
                    stop.set()

            nursery.start_soon(watch)
            report = await run_bench(config, progress=progress, command=command, stop=stop)
            nursery.cancel_scope.cancel()
    return report


def _check_out(out: str) -> str | None:
    """Why the report could not be written into ``out`` (created if needed), or ``None``."""
    path = pathlib.Path(out)
    if path.exists() and not path.is_dir():
        return f"--out {out} exists and is not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".bench-write-test-"):
            pass
    except OSError as exc:
        return f"cannot write into --out {out}: {exc.strerror or exc}"
    return None


def run(args: argparse.Namespace) -> int:
    import trio

    from ..bench import SCRIPTED, BenchConfig, Progress, render_table, run_bench, write_report
    from ..bench._records import Redactor, redact_url

    def fail(message: str) -> int:
        print(f"bench: error: {message}", file=sys.stderr)
        return 2

    api_key = ""
    if args.api_key_env:
        # A key read from a file often ends with a newline: it is no part of the key.
        api_key = os.environ.get(args.api_key_env, "").strip()
        if not api_key:
            return fail(f"the environment variable {args.api_key_env} is not set or empty")
    model = args.model or ("scripted-model" if args.base_url == SCRIPTED else None)
    if model is None:
        return fail("--model is required")
    scripted = {
        name: value
        for name in ("scripted_first_token_ms", "scripted_token_interval_ms", "scripted_error_rate")
        if (value := getattr(args, name)) is not None
    }
    if scripted and args.base_url != SCRIPTED:
        flags = ", ".join("--" + name.replace("_", "-") for name in scripted)
        return fail(f"{flags} apply only with --base-url scripted")
    concurrency: tuple[int, ...] = args.concurrency or (1,)
    rate: tuple[float, ...] = args.rate or ()
    try:
        config = BenchConfig(
            base_url=args.base_url,
            model=model,
            api_key=api_key,
            api_key_env=args.api_key_env,
            concurrency=concurrency,
            rate=rate,
            requests=None if args.duration is not None else _or(args.requests, 40),
            duration=args.duration,
            warmup=args.warmup,
            prompt_tokens=args.prompt_tokens,
            max_tokens=args.max_tokens,
            tools=args.tools,
            interrupt_after_ms=args.interrupt_after_ms,
            seed=args.seed,
            request_timeout=args.timeout,
            extra_body=args.extra_body,
            overhead=not args.no_overhead,
            **scripted,
        )
    except (ValueError, TypeError) as exc:
        return fail(Redactor.of([api_key])(str(exc)))
    command = _command(args)
    command = [redact_url(part) for part in command]
    out = args.out or os.path.join(
        "bench-results", datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    )
    problem = _check_out(out)
    if problem is not None:
        return fail(problem)  # before the run: its results must have a place to go
    try:
        report = trio.run(
            functools.partial(_until_ctrl_c, run_bench, config, Progress(sys.stderr), command)
        )
    except KeyboardInterrupt:
        report = None
    if report is None:
        print("bench: aborted; nothing written", file=sys.stderr)
        return 130
    print(render_table(report), end="")
    print()
    try:
        files = write_report(report, out)
    except OSError as exc:
        fail(f"could not write the report into {out}: {exc} (the table above is what it held)")
        return 1
    print(f"wrote {files.json}")
    print(f"wrote {files.html}")
    if files.png is not None:
        print(f"wrote {files.png}")
    else:
        print(f"no PNG plot: {files.png_note}")
    if report["partial"]:
        print(
            "bench: stopped early; the report holds what was measured until then", file=sys.stderr
        )
        return 130
    measured = sum(lv["errors"]["of"] for lv in report["levels"])
    failed = sum(lv["errors"]["total"] for lv in report["levels"])
    if measured and failed == measured:
        print("bench: every measured request failed", file=sys.stderr)
        return 1
    return 0
