"""Benchmark an OpenAI-compatible endpoint through a real pipeline and as a raw stream.

```python
import trio
from rustvani_trio.bench import BenchConfig, render_table, run_bench, write_report

config = BenchConfig(base_url="http://127.0.0.1:8000/v1", model="my-model", concurrency=(1, 8))
report = trio.run(run_bench, config)
print(render_table(report))
write_report(report, "bench-results")  # bench.json, report.html, bench.png (with matplotlib)
```

The command line is ``python -m rustvani_trio bench`` (see ``docs/bench.md``). Every request
is one user turn; half of them run through ``LLMUserAggregator -> OpenAILLMProcessor -> sink``
in a PipelineTask, the other half, interleaved, as a raw ``httpx`` stream of the same body over
the same client, so the framework's own share is measured under the same load.
"""

from ._config import SCRIPTED, BenchConfig, Level
from ._output import ReportFiles, write_report
from ._progress import Progress
from ._report import SCHEMA
from ._run import run_bench
from ._scripted import open_scripted_endpoint
from ._table import render_table

__all__ = [
    "SCHEMA",
    "SCRIPTED",
    "BenchConfig",
    "Level",
    "Progress",
    "ReportFiles",
    "open_scripted_endpoint",
    "render_table",
    "run_bench",
    "write_report",
]
