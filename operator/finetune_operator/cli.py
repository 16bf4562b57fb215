"""The `finetune` command line.

Operator-side commands live here. `train`, `eval` and `dataset` are the trainer's own command line
(`finetune_trainer.cli`), loaded only when called so that the operator image never needs torch.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from . import __version__

app = typer.Typer(
    name="finetune",
    help="finetune-operator: run embedding and LLM finetunes declared as FinetuneJob resources.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

_PASS_THROUGH: dict[str, Any] = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "help_option_names": [],
}


def _trainer_cli(command: str, args: list[str]) -> None:
    module = importlib.import_module("finetune_trainer.cli")
    code = module.main([command, *args])
    raise typer.Exit(code or 0)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Run one finetune on this machine (`finetune train --help` for the options)."""
    _trainer_cli("train", list(ctx.args))


@app.command("eval", context_settings=_PASS_THROUGH, add_help_option=False)
def eval_(ctx: typer.Context) -> None:
    """Evaluate a model on an EmbeddingQA dataset and print retrieval metrics as JSON."""
    _trainer_cli("eval", list(ctx.args))


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def dataset(ctx: typer.Context) -> None:
    """Generate, validate or split datasets (`finetune dataset --help`)."""
    _trainer_cli("dataset", list(ctx.args))


@app.command()
def crds(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory to write the CRD YAML files to.")
    ] = Path("crds"),
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the files differ instead of writing.")
    ] = False,
) -> None:
    """Generate the CustomResourceDefinitions from the API models.

    Every CEL rule's estimated cost is printed against its limit; when a kube-apiserver would refuse a
    CRD (the per-rule or whole-schema CEL cost budget), nothing is written and the exit code is 1.
    """
    from .api.celcost import format_report
    from .api.crdgen import all_crds, cost_reports, render

    generated = all_crds()
    refused: list[str] = []
    for name, report in cost_reports(generated).items():
        for line in format_report(name, report):
            typer.echo(line)
        if report.errors:
            crd_name = generated[name]["metadata"]["name"]
            refused += [f'The CustomResourceDefinition "{crd_name}" is invalid:']
            refused += [f"* {error}" for error in report.errors]
    if refused:
        typer.echo("the API server would refuse these CRDs; nothing written:", err=True)
        typer.echo("\n".join(refused), err=True)
        raise typer.Exit(1)
    stale = []
    for name, crd in generated.items():
        path = output / name
        text = render(crd)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        output.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        typer.echo(f"wrote {path}")
    if stale:
        typer.echo("out of date (run `make crds`): " + ", ".join(stale), err=True)
        raise typer.Exit(1)


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", "-n", help="Watch only this namespace (repeatable); default: the whole cluster."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the operator (in a cluster, or against the API server in FINETUNE_API_SERVER / kubeconfig)."""
    from .main import run_operator

    raise typer.Exit(run_operator(namespaces=list(namespace or []), verbose=verbose))


@app.command()
def local(
    files: Annotated[list[Path], typer.Argument(help="FinetuneJob manifests (files or directories).")],
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 3600.0,
    workdir: Annotated[Path, typer.Option(help="Where pvc:// volumes and outputs live.")] = Path("runs"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show operator logs.")] = False,
) -> None:
    """Run FinetuneJobs on this machine: emulated API server + the real operator + local trainer processes."""
    from .local.runner import run_local

    raise typer.Exit(run_local(files=files, timeout=timeout, workdir=workdir, verbose=verbose))


def main() -> None:
    app(prog_name="finetune")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
