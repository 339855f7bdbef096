"""Sphinx extension: ``rnnlab-run``, a code block that runs while the page is built.

The tutorials and how-to pages show code, what it printed and the figure it drew; all three
come from running the block when Sphinx reads the page, so the page cannot show code that does
not run or a result the code does not give. Blocks of one page share one namespace, in order,
starting from ``torch.manual_seed(0)``. A block that raises fails the build (an error, which
``-W`` turns into a non-zero exit), naming the page and the block.

In MyST::

    ```{rnnlab-run}
    :caption: The caption of the figure this block draws (optional)
    print(1 + 1)
    ```

Options: ``:caption:`` for the figure(s) the block leaves open (matplotlib, saved as PNG and
closed); ``:hide-code:`` to show only output and figure; ``:shell:`` to run the block as a bash
script instead (for ``rnnlab`` commands), in the page's own temporary folder with the
environment's ``bin/`` first on PATH.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOG = logging.getLogger(__name__)


def _namespace(env: Any) -> dict[str, Any]:
    key = "rnnlab_run_namespace"
    if key not in env.temp_data:  # temp_data is per document: a fresh namespace per page
        import matplotlib

        matplotlib.use("Agg")
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(int(os.environ.get("RNNLAB_DOCS_THREADS", "1")))
        env.temp_data[key] = {"__name__": f"rnnlab_docs_{env.docname.replace('/', '_')}"}
        env.temp_data["rnnlab_run_dir"] = tempfile.mkdtemp(prefix="rnnlab-docs-")
        env.temp_data["rnnlab_run_count"] = 0
    return env.temp_data[key]


class RunBlock(SphinxDirective):
    has_content = True
    option_spec = {
        "caption": directives.unchanged,
        "hide-code": directives.flag,
        "shell": directives.flag,
    }

    def run(self) -> list[nodes.Node]:
        namespace = _namespace(self.env)
        self.env.temp_data["rnnlab_run_count"] += 1
        count = self.env.temp_data["rnnlab_run_count"]
        where = f"{self.env.docname}, block {count} (line {self.lineno})"
        code = "\n".join(self.content)
        start = time.perf_counter()
        if "shell" in self.options:
            ok, output = self._shell(code)
        else:
            ok, output = self._python(code, namespace, where)
        LOG.info("rnnlab-run %s: %.1f s", where, time.perf_counter() - start)
        if not ok:
            raise self.error(f"rnnlab-run: the code of {where} failed:\n{output}")
        shown: list[nodes.Node] = []
        if "hide-code" not in self.options:
            language = "bash" if "shell" in self.options else "python"
            block = nodes.literal_block(code, code, language=language)
            block["classes"].append("rnnlab-code")
            shown.append(block)
        if output.strip():
            out = nodes.literal_block(output, output.rstrip("\n"), language="text")
            out["classes"].append("rnnlab-output")
            shown.append(out)
        shown += self._figures(count, namespace)
        return shown

    def _python(self, code: str, namespace: dict[str, Any], where: str) -> tuple[bool, str]:
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                exec(compile(code, f"<{where}>", "exec"), namespace)  # noqa: S102 - the page's code
        except BaseException:  # noqa: BLE001 - reported as a build error with its traceback
            return False, buffer.getvalue() + traceback.format_exc(limit=-6)
        return True, buffer.getvalue()

    def _shell(self, code: str) -> tuple[bool, str]:
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        src = Path(__file__).resolve().parents[2] / "src"
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=self.env.temp_data["rnnlab_run_dir"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = proc.stdout + (proc.stderr if proc.returncode else "")
        return proc.returncode == 0, output

    def _figures(self, count: int, namespace: dict[str, Any]) -> list[nodes.Node]:
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        # Figures this block made: pyplot's open ones, and Figure objects it bound to a name
        # (rnnlab.plots returns figures without pyplot) that no earlier block showed. Shown
        # figures are kept in a list (compared by identity), so none is shown twice.
        seen: list[Any] = self.env.temp_data.setdefault("rnnlab_run_figures", [])  # type: ignore[assignment]
        figures = [plt.figure(n) for n in plt.get_fignums()]
        figures += [
            v
            for v in namespace.values()
            if isinstance(v, Figure) and not any(v is f for f in figures)
        ]
        out: list[nodes.Node] = []
        folder = Path(self.env.srcdir) / "_build" / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        for number, fig in enumerate(figures):
            if any(fig is old for old in seen):
                continue
            seen.append(fig)
            name = f"{self.env.docname.replace('/', '-')}-{count}-{number}.png"
            fig.savefig(folder / name, dpi=90, bbox_inches="tight")
            uri = f"/_build/figures/{name}"
            figure = nodes.figure()
            image = nodes.image(uri=uri, alt=self.options.get("caption", "figure"))
            figure += image
            if "caption" in self.options:
                figure += nodes.caption(self.options["caption"], self.options["caption"])
            out.append(figure)
        plt.close("all")
        return out


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("rnnlab-run", RunBlock)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
