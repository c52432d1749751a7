"""A small BIG-bench source archive for tests, laid out like the real ``bigbench`` sdist."""

import io
import json
import tarfile

from reftlab.data import bigbench


def write_archive(path, tasks):
    """Write ``{"task[/subtask]": task.json content}`` as ``bigbench-1.0.0/bigbench/benchmark_tasks/...``."""
    with tarfile.open(path, "w:gz") as tar:
        for rel, data in tasks.items():
            blob = json.dumps(data).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{rel}/task.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def cached_archive(cache_dir, tasks):
    """Put an archive of ``tasks`` where ``$REFTLAB_CACHE=cache_dir`` finds it (no download)."""
    (cache_dir / "bigbench").mkdir(parents=True, exist_ok=True)
    write_archive(cache_dir / "bigbench" / bigbench.ARCHIVE, tasks)
