"""Where a search's Optuna study lives, and opening it by name from any process or machine.

``resolve_storage(url, out)``: the URL a study is opened on. Default: ``sqlite:///OUT/study.db``,
one file beside the trial log, which the worker processes of one machine share. PostgreSQL
(``postgresql+psycopg://USER:PASSWORD@HOST/DB``) is shared by several machines: each runs the
same command with the same URL. ``open_study`` creates the study or joins it (``load_if_exists``)
and checks that it was started with the same settings and data (``record``): a study is
continued, never mixed with another search.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

SCHEMES = ("sqlite", "postgresql", "mysql")
RECORD = "reftlab_record"
_FIX = "use sqlite:///PATH/study.db (one machine) or postgresql+psycopg://USER:PASSWORD@HOST/DB (several machines)"


def resolve_storage(url: str | None, out: Path | None) -> str | None:
    """The storage URL to open: ``url``, else ``sqlite:///OUT/study.db``, else None (in memory)."""
    if url is None:
        return None if out is None else f"sqlite:///{(out / 'study.db').resolve()}"
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"storage={url!r} is not a database URL; {_FIX}")
    scheme, _, rest = url.partition("://")
    database, _, driver = scheme.partition("+")
    if database not in SCHEMES:
        raise ValueError(f"storage {shown(url)!r}: unknown database {database!r}; {_FIX}")
    if database == "sqlite" and rest.startswith("/") and rest != "/:memory:":
        folder = Path(rest[1:]).parent
        if not folder.is_dir():
            raise ValueError(f"storage {url!r}: no folder {folder}; create it or give another path")
    if database == "postgresql" and not driver:
        return "postgresql+psycopg://" + rest  # SQLAlchemy's default driver (psycopg2) is not a dependency
    return url


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``url`` (None: in memory); an unreachable database is a ValueError."""
    import optuna
    import sqlalchemy.exc

    if url is None:
        return optuna.storages.InMemoryStorage()
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ModuleNotFoundError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"cannot open the study storage {shown(url)!r}: {reason}; check that the database "
            f"server is running and reachable and that the URL's user, password and database exist ({_FIX})"
        ) from None


def open_study(
    storage: Any,
    name: str,
    *,
    direction: Literal["minimize", "maximize"],
    sampler: Any,
    pruner: Any,
    record: Mapping[str, Any] | None,
) -> Any:
    """Create study ``name`` on ``storage`` or join it; ``record`` (what the search was started with) is
    stored by whoever creates it and must match for whoever joins (None: join without checking)."""
    import optuna

    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner, load_if_exists=True
    )
    if record is None:
        return study
    mine = json.loads(json.dumps(record, default=str))
    theirs = study.user_attrs.get(RECORD)
    if theirs is None:
        study.set_user_attr(RECORD, mine)
    elif theirs != mine:
        diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
        raise ValueError(
            f"study {name!r} was started with other settings (different: {', '.join(diff)}); resume it with the "
            "same settings, or start another study (a new output folder, or --study NAME)"
        )
    if study.direction.name.lower() != direction:
        raise ValueError(f"study {name!r} is to {study.direction.name.lower()}, this search would {direction}")
    return study


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and its experimental-API warnings off: the search prints its own lines."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def shown(url: str) -> str:
    """``url`` with its password, if any, as ***."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
