"""The generation half of an evaluation: every prompt x seed through the workflow on one or several ComfyUI servers,
the coarse and the realigned image of each saved, resumable. A run's result depends only on its prompt, its seed and
the workflow, never on which server made it, so spreading runs over servers gives the same images."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .comfy_client import ComfyClient, ComfyError, RunFailed, ServerUnreachable
from .prompt_sets import EvalPrompt
from .store import Store, run_name, write_atomic
from .template import Template, attention_shares, build_template
from .workflow_api import MissingNodeTypes

log = logging.getLogger("RealignDiff.evaluation")


@dataclass(frozen=True)
class Job:
    prompt: EvalPrompt
    seed: int

    @property
    def name(self) -> str:
        return run_name(self.prompt.id, self.seed)


def all_jobs(prompts: Sequence[EvalPrompt], seeds: Sequence[int]) -> list[Job]:
    return [Job(p, s) for p in prompts for s in seeds]


def pending(jobs: Sequence[Job], store: Store) -> list[Job]:
    """Jobs without a finished run (failed ones are tried again)."""
    return [job for job in jobs if (store.run(job.name) or {}).get("status") != "ok"]


def connect(servers: Sequence[str], workflow: dict, nodes: dict[str, str], timeout: float) -> tuple[list, Template]:
    """Clients for every server, and the template built from the first server's node definitions; every server
    must have every node the workflow uses."""
    clients = [ComfyClient(url, timeout=timeout) for url in dict.fromkeys(servers)]
    infos = [client.object_info() for client in clients]
    try:
        template = build_template(workflow, infos[0], nodes)
    except MissingNodeTypes as error:
        error.args = (f"ComfyUI at {clients[0].url}: {error}",)  # which server lacks them
        raise
    used = {entry["class_type"] for entry in template.prompt.values()}
    for client, info in zip(clients[1:], infos[1:]):
        missing = sorted(used - set(info))
        if missing:
            raise MissingNodeTypes({name: ["(on " + client.url + ")"] for name in missing})
    return clients, template


def run_job(client: ComfyClient, template: Template, job: Job, store: Store) -> dict:
    """Run one prompt x seed; record and return what happened. Server errors other than an unreachable server are
    the run's failure, recorded."""
    prompt = template.for_run(job.prompt.text, job.seed, job.name)
    record = {"prompt_id": job.prompt.id, "prompt": job.prompt.text, "seed": job.seed}
    try:
        outputs = client.run(prompt)
        images = {}
        for kind, node in template.save_nodes.items():
            refs = (outputs.get(node) or {}).get("images") or []
            if not refs:
                raise RunFailed(f"the {kind} image's SaveImage node (node {node}) gave no image")
            path = store.image_path(job.name, kind)
            write_atomic(path, client.image(refs[0]))
            images[kind] = str(path.relative_to(store.root))
        record.update(status="ok", images=images, attention_share=attention_shares(outputs, prompt), server=client.url)
    except ServerUnreachable:
        raise
    except ComfyError as error:
        record.update(status="failed", error=str(error))
        log.warning("run %s failed: %s", job.name, error)
    store.save_run(job.name, record)
    return record


def generate(clients: Sequence[ComfyClient], template: Template, jobs: Sequence[Job], store: Store, on_done: Callable):
    """Run ``jobs`` spread over ``clients`` (one worker thread per server, each taking the next job). Returns the
    records. Raises :class:`ServerUnreachable` when every server has gone; a server that goes alone hands its job
    back to the others."""
    todo: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        todo.put(job)
    records: dict[str, dict] = {}
    errors: list[ServerUnreachable] = []
    lock = threading.Lock()

    def work(client: ComfyClient) -> None:
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                record = run_job(client, template, job, store)
            except ServerUnreachable as error:
                todo.put(job)
                with lock:
                    errors.append(error)
                return
            with lock:
                records[job.name] = record
                on_done(record)

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not todo.empty() and errors:
        raise errors[0]
    return [records[job.name] for job in jobs if job.name in records]
