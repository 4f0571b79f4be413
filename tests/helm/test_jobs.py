"""Synth and training jobs, and every `videoqa` command line in the chart, checked against the real CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import typer.main

from tests.helm.conftest import CI_FILES, containers, env_of, find, one, pod_templates, render, selects

GPU = "nvidia.com/gpu"


def _videoqa_argv(container: dict) -> list[str] | None:
    """The `videoqa ...` argv a container runs: directly, after `sh -c SCRIPT NAME`, or under torchrun --no-python."""
    argv = container.get("command", []) + container.get("args", [])
    if argv[:2] == ["sh", "-c"]:
        argv = argv[4:]  # SCRIPT and $0; the script runs "$@"
    if argv and argv[0] == "torchrun":
        argv = argv[argv.index("--no-python") + 1 :]
    return argv[1:] if argv and argv[0] == "videoqa" else None


def _parse(argv: list[str]) -> tuple[object, dict]:
    """Parse argv with the real `videoqa` command tree (typer's click: options and arity; no callback runs, no file
    is opened). Raises the parser's usage error for an unknown option or a missing option value."""
    from videoqa.cli import app

    cmd = typer.main.get_command(app)
    words = list(argv)
    while hasattr(cmd, "commands"):  # a group: descend by subcommand name
        sub = words.pop(0)
        assert sub in cmd.commands, f"videoqa has no command {sub!r} here ({argv})"
        cmd = cmd.commands[sub]
    ctx = cmd.context_class(cmd, info_name=cmd.name)
    opts, rest, order = cmd.make_parser(ctx).parse_args(words)
    names = {p.name for p in cmd.params}
    assert set(opts) <= names, f"{argv}: unknown options {set(opts) - names}"
    assert not rest, f"{argv}: arguments the command does not take: {rest}"
    return cmd, {**opts, "_rest": rest}


@pytest.mark.parametrize("values_file", CI_FILES)
def test_every_videoqa_command_line_parses_with_the_real_cli(rendered, values_file: str) -> None:
    seen = set()
    for obj in rendered[values_file]:
        for name, pod in pod_templates(obj):
            for c in containers(pod):
                argv = _videoqa_argv(c)
                if argv is None:
                    continue
                argv = [a.replace("$(JOB_COMPLETION_INDEX)", "0") for a in argv]
                try:
                    cmd, _ = _parse(argv)
                except Exception as err:  # typer vendors click: its UsageError is not importable by a public name
                    pytest.fail(f"{name}/{c['name']}: videoqa {' '.join(argv)}: {err}")
                seen.add(cmd.name)
    assert {"engine", "serve"} <= seen


def test_synth_indexed_job_gives_each_pod_its_shard(rendered, values: Callable[[str], dict]) -> None:
    from videoqa.synth.cli import _shard

    objs = rendered["synth-values.yaml"]
    synth = values("synth-values.yaml")["synth"]
    job = one(objs, "Job", "synth")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == synth["shards"] == 16
    assert spec["parallelism"] == synth["parallelism"]
    (container,) = spec["template"]["spec"]["containers"]
    argv = _videoqa_argv(container)
    assert argv[:2] == ["synth", "run"]
    shard = argv[argv.index("--shard") + 1]
    assert shard == f"$(JOB_COMPLETION_INDEX)/{synth['shards']}"
    # The kubelet fills $(JOB_COMPLETION_INDEX) with the pod's index: every index is a valid, distinct shard
    shards = {_shard(shard.replace("$(JOB_COMPLETION_INDEX)", str(i))) for i in range(spec["completions"])}
    assert shards == {(i, 16) for i in range(16)}
    index = env_of(container)["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    _, opts = _parse(argv)
    assert opts["teacher_url"] == synth["teacher"]["url"] and opts["teacher_model"] == synth["teacher"]["model"]
    key = env_of(container)["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "openai", "key": "OPENAI_API_KEY"}
    # The merge Job merges the same output and run name, on the same volume
    merge = one(objs, "Job", "synth-merge")
    (merger,) = merge["spec"]["template"]["spec"]["containers"]
    margv = _videoqa_argv(merger)
    assert margv[:2] == ["synth", "merge"]
    assert margv[margv.index("--out") + 1] == argv[argv.index("--out") + 1] == synth["out"]
    assert margv[margv.index("--name") + 1] == argv[argv.index("--name") + 1] == synth["name"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for j in (job, merge)
        for v in j["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"videoqa-datasets"}
    # The merge waits for this run's shard count
    assert env_of(merger)["SHARDS"]["value"] == str(synth["shards"]) == env_of(container)["SHARDS"]["value"]


def _torchrun_flags(container: dict) -> dict[str, str]:
    args = container["args"]
    assert args[0] == "torchrun"
    flags = {}
    for a in args[1 : args.index("--no-python")]:
        k, _, v = a.partition("=")
        flags[k] = v
    return flags


def test_training_job_rendezvous_names_the_headless_service(rendered, values: Callable[[str], dict]) -> None:
    objs = rendered["train-multinode-values.yaml"]
    training = values("train-multinode-values.yaml")["training"]
    job = one(objs, "Job", "train")
    service = one(objs, "Service", "train")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod = job["spec"]["template"]
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    # The Job controller labels its pods with the job name; the Service must select them
    labels = {**pod["metadata"]["labels"], "batch.kubernetes.io/job-name": job["metadata"]["name"]}
    assert selects({"matchLabels": service["spec"]["selector"]}, labels)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == training["nodes"]
    (container,) = pod["spec"]["containers"]
    flags = _torchrun_flags(container)
    host, _, port = flags["--rdzv-endpoint"].rpartition(":")
    # Pod 0 of an Indexed Job is NAME-0, resolvable as NAME-0.SUBDOMAIN through the headless Service
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert int(port) == service["spec"]["ports"][0]["port"] == training["rendezvousPort"]
    assert flags["--rdzv-backend"] == "c10d"
    assert int(flags["--nnodes"]) == training["nodes"]
    assert int(flags["--nproc-per-node"]) == container["resources"]["limits"][GPU] == training["gpusPerNode"]
    assert _videoqa_argv(container)[0] == "train"


def test_training_recipe_is_a_valid_config_on_the_checkpoint_volume(rendered, tmp_path: Path) -> None:
    from videoqa.training.config import load_config

    objs = rendered["train-multinode-values.yaml"]
    job = one(objs, "Job", "train")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    recipe_path = _videoqa_argv(container)[1]
    mount = next(m for m in container["volumeMounts"] if recipe_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = next(c for c in find(objs, "ConfigMap") if c["metadata"]["name"] == volume["configMap"]["name"])
    path = tmp_path / "recipe.yaml"
    path.write_text(config_map["data"][Path(recipe_path).name])
    cfg = load_config(path)  # the trainer's own validation
    assert cfg.strategy == "fsdp" and cfg.save_every > 0  # resumable: a sharded checkpoint every save_every steps
    checkpoints = next(m for m in container["volumeMounts"] if m["name"] == "checkpoints")
    assert cfg.output_dir.startswith(checkpoints["mountPath"] + "/")
    assert any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"])
    assert env_of(container)["NCCL_SOCKET_IFNAME"]["value"] == "eth0"


def test_pytorchjob_switch(values: Callable[[str], dict]) -> None:
    objs = render("train-multinode-values.yaml", "training.mode=pytorchjob")
    assert not find(objs, "Job", "train") and not find(objs, "Service", "train")
    job = one(objs, "PyTorchJob")
    training = values("train-multinode-values.yaml")["training"]
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert replicas["Worker"]["replicas"] == training["nodes"] - 1
    assert job["spec"]["nprocPerNode"] == str(training["gpusPerNode"])
    for role in ("Master", "Worker"):
        (container,) = replicas[role]["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator injects its env into the container of this name
        assert container["resources"]["limits"][GPU] == training["gpusPerNode"]
        assert _videoqa_argv(container)[0] == "train"
